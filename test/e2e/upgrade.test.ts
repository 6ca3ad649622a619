/**
 * An upgrade of the code under `wrangler dev`: the state the previous version left when it was
 * killed mid-run (test/upgrade/fixtures/<commit>.state.tgz, from make-fixture.ts: two jobs
 * running mid-step, one waiting in line, one awaiting a person's input, finished, failed and
 * cancelled ones) is started with today's build. The running jobs resume and finish, their events
 * numbered on from those logged before, the waiting one starts and finishes, the one awaiting
 * input still shows its request and, answered, goes on to the end, the finished output reads back
 * byte for byte, and everything deletes. Its times are first moved forward by its age
 * (shift-times.py), so that it reads as if that server had stopped a moment ago.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunsClient } from "../../client/index";
import { startServer, stopServer, type DevServer } from "./server";

/** The version before today's schema changes. */
const PREVIOUS = "1feedb3";
const fixtures = join(import.meta.dirname, "..", "upgrade", "fixtures");
const fixture = JSON.parse(readFileSync(join(fixtures, `${PREVIOUS}.json`), "utf8")) as {
  jobs: Record<string, string>;
  statuses_when_killed: Record<string, string>;
  killed_at: number;
  r2: Record<string, string>;
  objects: {
    RunObject: { rows: { spec: { body: string }[]; events: { seq: number; type: string; data: string }[] } }[];
    TenantProjection: { rows: { changes: { id: number; kind: string; job: string }[] } }[];
  };
};

let server: DevServer;
beforeAll(async () => {
  const state = mkdtempSync(join(tmpdir(), "runs-upgrade-"));
  execFileSync("tar", ["xzf", join(fixtures, `${PREVIOUS}.state.tgz`), "-C", state]);
  execFileSync("python3", [join(fixtures, "..", "shift-times.py"), state, String(Date.now() - fixture.killed_at)]);
  server = await startServer(state);
});
afterAll(async () => {
  if (server) await stopServer(server);
});

/** The first `n` events of the tenant's feed resumed after position `after`, as "id event job_id", read by the project's client. */
async function feedAfter(after: number, n: number): Promise<string[]> {
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), 10_000);
  const told: string[] = [];
  try {
    for await (const change of new RunsClient({ baseUrl: server.base }).watch({}, { after: String(after), signal: abort.signal })) {
      told.push(`${change.id} ${change.event} ${change.event === "run" ? change.job.job_id : change.event === "deleted" ? change.job_id : ""}`);
      if (told.length === n) break;
    }
  } finally {
    clearTimeout(timeout);
    abort.abort();
  }
  return told;
}

const get = async (path: string) => (await fetch(`${server.base}${path}`)).json() as Promise<Record<string, unknown>>;

describe(`today's build on the state ${PREVIOUS} left`, () => {
  it("resumes the running jobs, starts the waiting one, serves the old output and deletes everything", async () => {
    const { jobs, statuses_when_killed: killed } = fixture;
    expect(killed).toMatchObject({ running: "running", running2: "running", queued: "queued", awaiting: "awaiting_input" });
    const awaiting = await get(`/api/v1/runs/${jobs.awaiting}`);
    expect(awaiting).toMatchObject({ status: "awaiting_input", input_request: { step: "step_1" } });
    // Answered under an idempotency key and sent again: the answer is given once.
    const answer = () =>
      fetch(`${server.base}/api/v1/runs/${jobs.awaiting}/input`, {
        method: "POST",
        headers: { "content-type": "application/json", "Idempotency-Key": "upgrade-answer" },
        body: '{"action":"approve"}',
      });
    expect((await answer()).status).toBe(200);
    const again = await answer();
    expect(again.status).toBe(200);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    const ends: Record<string, string> = {};
    for (let i = 0; i < 600 && Object.keys(ends).length < Object.keys(jobs).length; i++) {
      for (const [role, id] of Object.entries(jobs)) {
        if (ends[role]) continue;
        const { status } = await get(`/api/v1/runs/${id}`);
        if (["succeeded", "failed", "cancelled"].includes(String(status))) ends[role] = String(status);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const now = Object.fromEntries(await Promise.all(Object.entries(jobs).map(async ([role, id]) => [role, await get(`/api/v1/runs/${id}`)])));
    expect(ends, JSON.stringify(now)).toEqual({ ...killed, running: "succeeded", running2: "succeeded", queued: "succeeded", awaiting: "succeeded" });

    // A job's events are kept and numbered on from those the previous version logged, none
    // skipped or given twice (its events table was made again), so a stream resumed across the
    // upgrade misses nothing.
    const logged = fixture.objects.RunObject.find((db) => JSON.parse(db.rows.spec[0].body).job_id === jobs.running)!.rows.events;
    const stream = await (await fetch(`${server.base}/api/v1/runs/${jobs.running}/stream`)).text();
    const byId = new Map(stream.split("\n\n").map((block) => [Number(/^id: (\d+)$/m.exec(block)?.[1]), block]));
    const ids = [...byId.keys()].filter((id) => !Number.isNaN(id));
    expect(ids.length).toBeGreaterThan(logged.length);
    expect(ids).toEqual(ids.map((_, i) => i + 1));
    const outputs = logged.filter((event) => event.type === "output");
    expect(outputs.length).toBeGreaterThan(0);
    for (const event of outputs) expect(byId.get(event.seq)).toContain(JSON.parse(event.data).delta.trim());

    // The feed's change log too (made again): a watcher resuming from a position the previous
    // version gave is told its last change, then today's, numbered on from it.
    const changes = fixture.objects.TenantProjection[0].rows.changes;
    const last = changes[changes.length - 1];
    const told = await feedAfter(last.id - 1, 4);
    expect(told[0]).toBe(`${last.id} ${last.kind} ${(JSON.parse(last.job) as { job_id: string }).job_id}`);
    expect(told.map((t) => Number(t.split(" ")[0]))).toEqual([0, 1, 2, 3].map((i) => last.id + i));

    const prefix = `runs/default/${jobs.finished}/`;
    const expected = Object.keys(fixture.r2)
      .filter((k) => k.startsWith(prefix))
      .sort()
      .map((k) => Buffer.from(fixture.r2[k], "base64").toString("utf8"))
      .join("");
    expect(await (await fetch(`${server.base}/api/v1/runs/${jobs.finished}/output`)).text()).toBe(expected);

    const list = (await get("/api/v1/runs?page_size=100")) as { total: number };
    expect(list.total).toBe(Object.keys(jobs).length);
    for (const id of Object.values(jobs)) expect((await fetch(`${server.base}/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
    expect(((await get("/stats")) as { total_jobs: number }).total_jobs).toBe(0);
  });
});
