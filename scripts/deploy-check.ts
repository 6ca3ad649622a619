/**
 * `npm run deploy:check`: is this checkout ready to deploy? Offline, it checks the settings a
 * deployment needs (the vars of wrangler.jsonc and the secrets file given to
 * `wrangler secret bulk`) with the Worker's own checks, then bundles it with
 * `wrangler deploy --dry-run` and holds its code to a size budget and the whole upload to
 * Cloudflare's limit.
 *
 *   npm run deploy:check -- [--secrets FILE]      FILE defaults to .secrets.json
 *   npm run deploy:check -- --without-secrets     config and bundle only (CI has no secrets)
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { unstable_readConfig } from "wrangler";
import { deploymentProblems, flagSetting, settingsProblems } from "../src/settings";
import { codeFile } from "./dry-run-output";

/** The most the gzipped code may weigh: every cold isolate at every location parses it. */
export const BUNDLE_BUDGET_KIB = 100;
/**
 * The most the whole upload may weigh gzipped, code and the files bundled beside it as modules of
 * their own (Swagger UI's and the reference frontend's, as text: never parsed): Cloudflare's limit
 * for a Worker on any plan.
 */
export const UPLOAD_LIMIT_KIB = 3 * 1024;
const SECRETS = ["API_KEYS", "TOKEN_SECRET", "TOKEN_SECRET_PREVIOUS", "WEBHOOK_SECRET", "WEBHOOK_SECRET_PREVIOUS", "MODEL_API_KEY"];

function parseArgs(argv: string[]): { secrets: string | null } {
  if (argv.includes("--without-secrets")) return { secrets: null };
  const at = argv.indexOf("--secrets");
  return { secrets: at >= 0 ? argv[at + 1] : ".secrets.json" };
}

function readSecrets(file: string, problems: string[]): Record<string, string> {
  if (!existsSync(file)) {
    problems.push(`${file} not found: put the deployment's secrets there (see the README's "Deploy") or pass --secrets FILE`);
    return {};
  }
  let secrets: unknown;
  try {
    secrets = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    problems.push(`${file} is not JSON: wrangler secret bulk takes a JSON object of names to strings`);
    return {};
  }
  if (secrets === null || typeof secrets !== "object" || Array.isArray(secrets)) {
    problems.push(`${file} must be a JSON object of names to strings`);
    return {};
  }
  for (const [name, value] of Object.entries(secrets)) {
    if (!SECRETS.includes(name)) problems.push(`${file}: ${name} is no secret this service reads (it reads ${SECRETS.join(", ")})`);
    if (typeof value !== "string") problems.push(`${file}: ${name} must be a string`);
  }
  return secrets as Record<string, string>;
}

function configProblems(vars: Record<string, unknown>, config: ReturnType<typeof unstable_readConfig>): string[] {
  const problems: string[] = [];
  for (const name of SECRETS) if (name in vars) problems.push(`${name} is a var in wrangler.jsonc: it is a secret, set it with wrangler secret`);
  if (flagSetting(vars, "WEBHOOK_ALLOW_PRIVATE")) problems.push('WEBHOOK_ALLOW_PRIVATE is "true": only local development may send webhooks to private addresses');
  if (!config.r2_buckets.some((b: { binding: string; bucket_name?: string }) => b.binding === "OUTPUTS" && b.bucket_name)) problems.push("OUTPUTS: wrangler.jsonc binds no R2 bucket for the outputs");
  if (spawnSync("node", ["scripts/bundle.mjs", "--check"]).status !== 0) problems.push("a bundle of agents/, recipes/ or frontend/ is stale: a folder changed since; run npm run bundle");
  return problems;
}

function bundle(): { ok: boolean; codeGzipKiB: number | null; uploadGzipKiB: number | null; output: string } {
  rmSync("dist", { recursive: true, force: true });
  const run = spawnSync("node_modules/.bin/wrangler", ["deploy", "--dry-run", "--outdir", "dist"], {
    encoding: "utf8",
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  const output = `${run.stdout}${run.stderr}`;
  const upload = /Total Upload: [\d.]+ KiB \/ gzip: ([\d.]+) KiB/.exec(output);
  const code = run.status === 0 ? codeFile("dist") : null;
  return {
    ok: run.status === 0,
    codeGzipKiB: code === null ? null : Math.round((gzipSync(readFileSync(code)).length / 1024) * 100) / 100,
    uploadGzipKiB: upload ? Number(upload[1]) : null,
    output,
  };
}

function main(): number {
  const { secrets: secretsFile } = parseArgs(process.argv.slice(2));
  const config = unstable_readConfig({ config: "wrangler.jsonc" });
  const vars = config.vars as Record<string, unknown>;
  const problems = configProblems(vars, config);
  const env: Record<string, unknown> = { ...vars };
  if (secretsFile !== null) Object.assign(env, readSecrets(secretsFile, problems));
  problems.push(...(secretsFile === null ? settingsProblems(env) : deploymentProblems(env)));
  if (problems.length > 0) {
    for (const problem of problems) console.error(`✗ ${problem}`);
    console.error(`deploy:check: ${problems.length} problem(s); nothing was bundled`);
    return 1;
  }
  console.log(`✓ settings${secretsFile === null ? " (vars only)" : ` (vars and ${secretsFile})`}`);
  const built = bundle();
  if (!built.ok || built.codeGzipKiB === null || built.uploadGzipKiB === null) {
    console.error(built.output);
    console.error("✗ wrangler deploy --dry-run failed");
    return 1;
  }
  if (built.codeGzipKiB > BUNDLE_BUDGET_KIB) {
    console.error(`✗ bundle: its code is ${built.codeGzipKiB} KiB gzip, over the budget of ${BUNDLE_BUDGET_KIB} KiB`);
    return 1;
  }
  if (built.uploadGzipKiB > UPLOAD_LIMIT_KIB) {
    console.error(`✗ bundle: ${built.uploadGzipKiB} KiB gzip in all, over Cloudflare's limit of ${UPLOAD_LIMIT_KIB} KiB`);
    return 1;
  }
  console.log(`✓ bundle: code ${built.codeGzipKiB} KiB gzip (budget ${BUNDLE_BUDGET_KIB} KiB); ${built.uploadGzipKiB} KiB gzip in all with the files bundled beside it (limit ${UPLOAD_LIMIT_KIB} KiB), in dist/`);
  return 0;
}

process.exit(main());
