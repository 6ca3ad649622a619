/**
 * `npm run bench:startup`: what the Worker costs a cold isolate before its first request. The
 * service and the floor of the design (bench/floor/) are each bundled as a deploy bundles them
 * (`wrangler deploy --dry-run`), then loaded by fresh V8 isolates (Node processes, with a stand-in
 * for `cloudflare:workers`), and the time from import to evaluated module is taken: parsing and
 * running the top level, which every isolate pays. Medians of BENCH_STARTUP_RUNS (default 30).
 * Files bundled as modules of their own (Swagger UI's, as text) are not code: each isolate is
 * handed them as they are, so the probe reads them before it starts the clock.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { codeFile, moduleFiles } from "../scripts/dry-run-output";

const RUNS = Number(process.env.BENCH_STARTUP_RUNS ?? 30);

/** The bundle's directory: its code, beside any files bundled as modules of their own. */
function bundle(config: string): string {
  const outdir = mkdtempSync(join(tmpdir(), "runs-startup-"));
  const run = spawnSync("node_modules/.bin/wrangler", ["deploy", "--dry-run", "--minify", "--outdir", outdir, "--config", config], {
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  if (run.status !== 0) throw new Error(`bundling ${config} failed:\n${run.stdout}${run.stderr}`);
  return outdir;
}

function codeOf(outdir: string): string {
  const file = codeFile(outdir);
  if (file === null) throw new Error(`wrangler left no code in ${outdir}`);
  return file;
}

/**
 * The bundle with its `cloudflare:workers` imports read from a stand-in on globalThis, and its
 * other modules from the contents the probe read beforehand.
 */
function loadable(outdir: string): string {
  const code = readFileSync(codeOf(outdir), "utf8")
    .replace(
      /import\s*\{([^}]*)\}\s*from\s*"cloudflare:workers";?/g,
      (_all, names: string) => `const {${names.replace(/\s+as\s+/g, ": ")}} = globalThis.__cloudflareWorkers;`,
    )
    .replace(/import\s*([\w$]+)\s*from\s*"\.\/([^"]+)";?/g, (_all, name: string, file: string) => `const ${name} = globalThis.__modules[${JSON.stringify(file)}];`);
  const out = join(outdir, "index.node.mjs");
  writeFileSync(out, code);
  return out;
}

const PROBE = `
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
const dir = dirname(fileURLToPath(process.argv[1]));
globalThis.__modules = {};
for (const file of JSON.parse(process.argv[2])) globalThis.__modules[file] = file.endsWith(".png") ? readFileSync(join(dir, file)).buffer : readFileSync(join(dir, file), "utf8");
globalThis.__cloudflareWorkers = { DurableObject: class { constructor(ctx, env) { this.ctx = ctx; this.env = env; } } };
const started = performance.now();
await import(process.argv[1]);
console.log(performance.now() - started);
`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function evaluationMs(file: string, modules: string[]): number {
  const url = pathToFileURL(file).href;
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", PROBE, url, JSON.stringify(modules)], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`evaluating ${file} failed:\n${run.stderr}`);
    times.push(Number(run.stdout.trim()));
  }
  return median(times);
}

function figures(name: string, config: string) {
  const outdir = bundle(config);
  const code = readFileSync(codeOf(outdir));
  const modules = moduleFiles(outdir);
  const files = modules.map((f) => readFileSync(join(outdir, f)));
  return {
    name,
    kib: code.length / 1024,
    gzipKib: gzipSync(code).length / 1024,
    filesGzipKib: files.reduce((sum, bytes) => sum + gzipSync(bytes).length, 0) / 1024,
    ms: evaluationMs(loadable(outdir), modules),
  };
}

const service = figures("service", "wrangler.jsonc");
const floor = figures("floor of the design", "bench/floor/wrangler.jsonc");
console.log("bundle              | code KiB | code gzip KiB | other files gzip KiB | evaluation ms (median) | against the floor");
console.log("--------------------|----------|---------------|----------------------|------------------------|------------------");
for (const f of [service, floor]) {
  console.log(
    [
      f.name.padEnd(19),
      f.kib.toFixed(1).padStart(8),
      f.gzipKib.toFixed(1).padStart(13),
      f.filesGzipKib.toFixed(1).padStart(20),
      f.ms.toFixed(2).padStart(22),
      `${(f.ms / floor.ms).toFixed(1)}x`,
    ].join(" | "),
  );
}
