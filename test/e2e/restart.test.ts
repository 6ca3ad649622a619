/**
 * `wrangler dev` with persisted state, killed with SIGKILL (wrangler and workerd at once) during
 * a run, during outbox drains and during a purge, then started again on the same state.
 */
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BASE, killServer, startServer, stopServer, type DevServer } from "./server";

let server: DevServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  if (server) await stopServer(server);
});

type Job = { job_id: string; status: string; progress: { steps_completed: number } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const getJob = async (id: string) => fetch(`${BASE}/api/v1/runs/${id}`);

async function submit(body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${BASE}/api/v1/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return ((await res.json()) as { job_id: string }).job_id;
}

async function until<T>(probe: () => Promise<T | undefined>, what: string, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const finished = (id: string) =>
  until(async () => {
    const job = (await (await getJob(id)).json()) as Job;
    return ["succeeded", "failed", "cancelled"].includes(job.status) ? job : undefined;
  }, `job ${id} to finish`);

async function restart() {
  await killServer(server);
  server = await startServer(server.persistTo);
}

async function events(id: string): Promise<string[]> {
  const text = await (await fetch(`${BASE}/api/v1/runs/${id}/stream`)).text();
  return text.split("\n").filter((l) => l.startsWith("event: ")).map((l) => l.slice(7));
}

/** How often, and how far apart, R2's state is read again while the running server holds its database locked. */
const LOCKED_TRIES = 20;
const LOCKED_WAIT_MS = 250;

/**
 * Whether R2 holds the key, asked through R2's own API (wrangler's local R2 client) on the server's
 * state. That client opens the database the running server writes: while the server holds it
 * locked (SQLITE_BUSY, say just after it wrote 160 MiB), it is asked again a moment later.
 */
async function r2Has(key: string): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      execFileSync("node_modules/.bin/wrangler", ["r2", "object", "get", `edge-runs-outputs/${key}`, "--local", "--persist-to", server.persistTo, "--pipe"], {
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
        stdio: ["ignore", "ignore", "pipe"],
      });
      return true;
    } catch (error) {
      const stderr = String((error as { stderr?: Buffer }).stderr ?? "");
      if (stderr.includes("The specified key does not exist")) return false;
      if (!stderr.includes("SQLITE_BUSY") || attempt === LOCKED_TRIES) throw error;
      await sleep(LOCKED_WAIT_MS);
    }
  }
}

describe("SIGKILL and restart", () => {
  it("during a run: the job resumes at its step and completes once", async () => {
    const id = await submit({ prompt: "crash", config: { simulate: { steps: 4, step_ms: 700 } } });
    await until(async () => {
      const job = (await (await getJob(id)).json()) as Job;
      return job.progress.steps_completed >= 1 ? job : undefined;
    }, "a finished step");
    await restart();

    const job = await finished(id);
    expect(job.status).toBe("succeeded");
    expect(job.progress.steps_completed).toBe(4);
    expect((await events(id)).filter((e) => e === "complete")).toHaveLength(1);
    const result = (await (await fetch(`${BASE}/api/v1/runs/${id}/result`)).json()) as { result: string };
    expect(result.result.split("\n").filter(Boolean)).toEqual([1, 2, 3, 4].map((i) => `Step ${i}/4 (step_${i}): simulated answer to: crash`));
  });

  it("while a job awaits input: the request survives, and the answer resumes the job once", async () => {
    const id = await submit({ prompt: "ask", config: { simulate: { steps: 3, step_ms: 100, input_at_step: 2 } } });
    const asked = await until(async () => {
      const job = (await (await getJob(id)).json()) as Job & { input_request: { step: string } | null };
      return job.status === "awaiting_input" ? job : undefined;
    }, "the request for input");
    await restart();
    const after = (await (await getJob(id)).json()) as typeof asked;
    expect(after).toEqual(asked);

    const answer = () => fetch(`${BASE}/api/v1/runs/${id}/input`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"action":"approve"}' });
    expect((await answer()).status).toBe(200);
    await restart(); // before or after the answer reached the line: it starts once either way
    expect((await answer()).status).toBe(409);
    const job = await finished(id);
    expect(job.status).toBe("succeeded");
    const log = await events(id);
    expect(log.filter((e) => e === "input_required")).toHaveLength(1);
    expect(log.filter((e) => e === "complete")).toHaveLength(1);
    const result = (await (await fetch(`${BASE}/api/v1/runs/${id}/result`)).json()) as { result: string };
    expect(result.result.split("\n").filter(Boolean)).toHaveLength(3);
  });

  it("during outbox drains: every acknowledged job is there, consistent, and the index equals the live jobs", async () => {
    const session = `drain-${Date.now()}`;
    const ids: string[] = [];
    const cancelled = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const id = await submit({ prompt: `drain ${i}`, session_id: session, config: { simulate: { steps: 2, step_ms: 150 } } });
      ids.push(id);
      if (i % 3 === 0 && (await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" })).status === 200) cancelled.add(id);
    }
    await restart(); // while steps finish and their index updates drain

    for (const id of ids) {
      const job = await finished(id);
      expect(cancelled.has(id) ? "cancelled" : "succeeded").toBe(job.status);
    }
    const list = await until(async () => {
      const body = (await (await fetch(`${BASE}/api/v1/runs?session_id=${session}&page_size=100`)).json()) as { jobs: Job[] };
      return body.jobs.every((j) => ["succeeded", "cancelled"].includes(j.status)) ? body : undefined;
    }, "the index to catch up");
    expect(list.jobs.map((j) => j.job_id).sort()).toEqual([...ids].sort());
    for (const job of list.jobs) expect(job.status).toBe(cancelled.has(job.job_id) ? "cancelled" : "succeeded");
  });

  it("during a purge: after the restart the purge completes and nothing is left", async () => {
    const session = `purge-${Date.now()}`;
    const id = await submit({ prompt: "purge", session_id: session, config: { simulate: { steps: 4, step_ms: 1, output_bytes: 40 * 1024 * 1024 } } });
    expect((await finished(id)).status).toBe("succeeded");
    const keys = [1, 2, 3, 4].map((n) => `runs/default/${id}/steps/000${n}`);
    expect(await Promise.all(keys.map(r2Has))).toEqual([true, true, true, true]);

    const deleting = fetch(`${BASE}/api/v1/runs/${id}`, { method: "DELETE" }).catch(() => null);
    await sleep(5);
    await restart();
    await deleting;

    // Either the delete was never applied (the job is whole) or it finishes now: never half.
    if ((await getJob(id)).status === 200) expect((await fetch(`${BASE}/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
    await until(async () => ((await getJob(id)).status === 404 ? true : undefined), "the job to be gone");
    const list = await until(async () => {
      const body = (await (await fetch(`${BASE}/api/v1/runs?session_id=${session}`)).json()) as { jobs: Job[] };
      return body.jobs.length === 0 ? body : undefined;
    }, "the index row to go");
    expect(list.jobs).toEqual([]);
    expect((await fetch(`${BASE}/api/v1/runs/${id}/output`)).status).toBe(404);
    expect(await Promise.all(keys.map(r2Has))).toEqual([false, false, false, false]);
  });
});
