/**
 * `npm run bench:startup`: what the Worker costs a cold isolate before its first request. The
 * service and the floor of the design (bench/floor/) are each bundled as a deploy bundles them
 * (`wrangler deploy --dry-run`), then loaded by fresh V8 isolates (Node processes, with a stand-in
 * for `cloudflare:workers`), and the time from import to evaluated module is taken: parsing and
 * running the top level, which every isolate pays. Medians of BENCH_STARTUP_RUNS (default 30).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

const RUNS = Number(process.env.BENCH_STARTUP_RUNS ?? 30);

function bundle(config: string): string {
  const outdir = mkdtempSync(join(tmpdir(), "runs-startup-"));
  const run = spawnSync("node_modules/.bin/wrangler", ["deploy", "--dry-run", "--minify", "--outdir", outdir, "--config", config], {
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  if (run.status !== 0) throw new Error(`bundling ${config} failed:\n${run.stdout}${run.stderr}`);
  return join(outdir, readdirSync(outdir).find((f) => f.endsWith(".js"))!);
}

/** The bundle with its `cloudflare:workers` imports read from a stand-in on globalThis. */
function loadable(file: string): string {
  const code = readFileSync(file, "utf8").replace(
    /import\s*\{([^}]*)\}\s*from\s*"cloudflare:workers";?/g,
    (_all, names: string) => `const {${names.replace(/\s+as\s+/g, ": ")}} = globalThis.__cloudflareWorkers;`,
  );
  const out = file.replace(/\.js$/, ".node.mjs");
  writeFileSync(out, code);
  return out;
}

const PROBE = `
globalThis.__cloudflareWorkers = { DurableObject: class { constructor(ctx, env) { this.ctx = ctx; this.env = env; } } };
const started = performance.now();
await import(process.argv[1]);
console.log(performance.now() - started);
`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function evaluationMs(file: string): number {
  const url = pathToFileURL(file).href;
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", PROBE, url], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`evaluating ${file} failed:\n${run.stderr}`);
    times.push(Number(run.stdout.trim()));
  }
  return median(times);
}

function figures(name: string, config: string) {
  const file = bundle(config);
  const bytes = readFileSync(file);
  return { name, kib: bytes.length / 1024, gzipKib: gzipSync(bytes).length / 1024, ms: evaluationMs(loadable(file)) };
}

const service = figures("service", "wrangler.jsonc");
const floor = figures("floor of the design", "bench/floor/wrangler.jsonc");
console.log("bundle              | size KiB | gzip KiB | evaluation ms (median) | against the floor");
console.log("--------------------|----------|----------|------------------------|------------------");
for (const f of [service, floor]) {
  console.log(
    [f.name.padEnd(19), f.kib.toFixed(1).padStart(8), f.gzipKib.toFixed(1).padStart(8), f.ms.toFixed(2).padStart(22), `${(f.ms / floor.ms).toFixed(1)}x`].join(" | "),
  );
}
