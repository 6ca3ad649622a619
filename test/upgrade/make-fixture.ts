/**
 * Makes the upgrade fixture of one earlier version of this repository: that version's code runs
 * under its own `wrangler dev` (in a git worktree with its own dependencies), is given the same
 * jobs in every state a job can be in (finished, failed, cancelled, running mid-step, queued,
 * one holding an idempotency key, and, in versions that have human input, one awaiting it), and
 * is killed mid-run. Its Durable Objects' databases and R2
 * objects are then dumped as JSON (dump-state.py): the schema its migrations made, and the rows
 * its code wrote. test/upgrade/upgrade.test.ts loads each into today's objects. The state
 * directory itself is kept too (`<commit>.state.tgz`): test/e2e/upgrade.test.ts starts today's
 * `wrangler dev` on the newest one.
 *
 *   npx tsx test/upgrade/make-fixture.ts <commit>     writes test/upgrade/fixtures/<commit>.json and .state.tgz
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const commit = process.argv[2];
if (!commit) throw new Error("usage: npx tsx test/upgrade/make-fixture.ts <commit>");
const PORT = 8015;
const base = `http://127.0.0.1:${PORT}`;
const tree = join(tmpdir(), `runs-upgrade-${commit}`);

if (!existsSync(tree)) {
  execFileSync("git", ["worktree", "add", "--detach", tree, commit], { stdio: "inherit" });
  execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: tree, stdio: "inherit" });
}
const state = mkdtempSync(join(tmpdir(), `runs-upgrade-state-${commit}-`));
const server = spawn(
  "node_modules/.bin/wrangler",
  ["dev", "--ip", "127.0.0.1", "--port", String(PORT), "--persist-to", state, "--log-level", "warn", "--var", "MAX_RUNNING_PER_TENANT:2"],
  { cwd: tree, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", CI: "true" }, stdio: "inherit", detached: true },
);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function call(method: string, path: string, body?: unknown) {
  const res = await fetch(`${base}${path}`, { method, headers: body ? { "content-type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}
const submit = async (prompt: string, simulate: object, extra: object = {}) => {
  const res = await call("POST", "/api/v1/runs", { prompt, config: { simulate }, ...extra });
  if (res.status !== 202) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.job_id as string;
};
async function until(id: string, statuses: string[]) {
  for (let i = 0; i < 300; i++) {
    const { body } = await call("GET", `/api/v1/runs/${id}`);
    if (statuses.includes(body.status)) return;
    await sleep(50);
  }
  throw new Error(`${id} never reached ${statuses}`);
}

try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/health`)).ok) break;
    } catch {
      if (i > 300) throw new Error("wrangler dev did not come up");
    }
    await sleep(250);
  }
  const jobs: Record<string, string> = {};
  jobs.finished = await submit("upgrade: finished", { steps: 2, step_ms: 10, output_bytes: 3000 });
  await until(jobs.finished, ["succeeded"]);
  jobs.keyed = await submit("upgrade: keyed", { steps: 1, step_ms: 10 }, { idempotency_key: "upgrade-key", session_id: "upgrade-session", metadata: { origin: "fixture" } });
  await until(jobs.keyed, ["succeeded"]);
  jobs.failed = await submit("upgrade: failed", { steps: 2, step_ms: 10, fail_at_step: 2 });
  await until(jobs.failed, ["failed"]);
  jobs.cancelled = await submit("upgrade: cancelled", { steps: 2, step_ms: 600_000 });
  await until(jobs.cancelled, ["running"]);
  await call("POST", `/api/v1/runs/${jobs.cancelled}/cancel`);
  await until(jobs.cancelled, ["cancelled"]);
  // A job that stops for a person holds no slot while it waits: it takes one only on its way there.
  const { body: document } = await call("GET", "/openapi.json");
  if (document.paths["/api/v1/runs/{id}/input"]) {
    jobs.awaiting = await submit("upgrade: awaiting input", { steps: 2, step_ms: 10, input_at_step: 1 });
    await until(jobs.awaiting, ["awaiting_input"]);
  }
  // Two long jobs fill the tenant's two slots (where the version has a limit); a third waits.
  jobs.running = await submit("upgrade: running", { steps: 3, step_ms: 1500 });
  jobs.running2 = await submit("upgrade: running too", { steps: 3, step_ms: 1500 });
  jobs.queued = await submit("upgrade: queued", { steps: 2, step_ms: 10 });
  await sleep(2000);
  const seen = await Promise.all(Object.entries(jobs).map(async ([role, id]) => [role, (await call("GET", `/api/v1/runs/${id}`)).body.status]));
  console.error("killed with", Object.fromEntries(seen));
  process.kill(-server.pid!, "SIGKILL");
  const killedAt = Date.now();
  await sleep(500);
  const dump = JSON.parse(execFileSync("python3", [join(import.meta.dirname, "dump-state.py"), state], { maxBuffer: 64 * 1024 * 1024 }).toString());
  const dir = join(import.meta.dirname, "fixtures");
  mkdirSync(dir, { recursive: true });
  const subject = execFileSync("git", ["log", "-1", "--format=%s", commit]).toString().trim();
  writeFileSync(join(dir, `${commit}.json`), `${JSON.stringify({ commit, subject, jobs, statuses_when_killed: Object.fromEntries(seen), killed_at: killedAt, ...dump }, null, 1)}\n`);
  execFileSync("tar", ["czf", join(dir, `${commit}.state.tgz`), "-C", state, "."]);
  console.error(`wrote test/upgrade/fixtures/${commit}.json`);
} finally {
  try {
    process.kill(-server.pid!, "SIGKILL");
  } catch {
    // already gone
  }
}
