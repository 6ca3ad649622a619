import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { failingStubs, restoreBindings, withBindings } from "../faults";
import { api, drive, getJob, lineStub, post, r2Keys, runStub } from "../helpers";
import { alarmOf, askSlotsGrantedAtJoin, enqueue, fireLine, LIMIT, lineCounts, release } from "./line";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const running = async () =>
  (await api("/api/v1/runs?status=running&page_size=100").then((r) => r.json<{ jobs: { job_id: string }[] }>())).jobs.map((j) => j.job_id);

describe("wake-ups from the line", () => {
  it("a retry that waits for its slot has no alarm either: the hold on its copies' prefix goes when its job is made", async () => {
    const key = "retry-waits";
    const old = await enqueue({ concurrency_key: key }, { steps: 2, fail_at_step: 2 });
    expect(await drive(old.job_id)).toMatchObject({ status: "failed", progress: { steps_completed: 1 } });
    const holder = await enqueue({ concurrency_key: key }, { steps: 3, step_ms: 60_000 });
    expect(holder.status).toBe("running");
    // The retry keeps the old job's key, whose one slot the holder has.
    const res = await post(`/api/v1/runs/${old.job_id}/retry`, {});
    expect(res.status).toBe(202);
    const retried = await res.json<{ job_id: string; status: string }>();
    expect(retried.status).toBe("queued");
    expect(await alarmOf(runStub(retried.job_id))).toBeNull();
    expect(await r2Keys(`runs/default/${retried.job_id}/`)).toHaveLength(1);
    for (const id of [retried.job_id, holder.job_id]) await release(id);
    expect(await lineCounts()).toMatchObject({ waiting: 0, running: 0 });
  });

  it("a waiting job has no alarm of its own; a wake-up that is lost is told again by the line's alarm", async () => {
    for (let i = 0; i < LIMIT; i++) await enqueue({}, { steps: 3 });
    const waiting = await enqueue();
    expect(waiting.status).toBe("queued");
    expect(await alarmOf(runStub(waiting.job_id))).toBeNull();

    await withBindings(lineStub(), { RUNS: failingStubs(env.RUNS, "start", [1], "before").proxy });
    const failedFrom = Date.now();
    await release((await running())[0]);
    expect((await getJob(waiting.job_id)).status).toBe("queued");
    expect(await alarmOf(runStub(waiting.job_id))).toBeNull();
    // Not told again before RETRY_BASE_MS (1 s) has passed: a job that cannot be reached is not called in a loop.
    const retryAt = await runInDurableObject(lineStub(), (_instance, state) =>
      state.storage.sql.exec<{ retry_at: number | null }>("SELECT retry_at FROM places WHERE job_id = ?", waiting.job_id).one().retry_at,
    );
    expect(retryAt).toBeGreaterThanOrEqual(failedFrom + 1000);

    await restoreBindings(lineStub());
    await sleep(1050); // the line tells it again after its backoff
    await fireLine();
    expect((await getJob(waiting.job_id)).status).toBe("running");
  });

  it("a place whose job ended before its turn is given up, and the slot goes to the next in line", async () => {
    const gone = await enqueue();
    const next = await enqueue();
    // Cancelled, but its word to the line is still in its outbox (its alarm has not run).
    expect((await api(`/api/v1/runs/${gone.job_id}/cancel`, { method: "POST" })).status).toBe(200);
    expect(await lineCounts()).toMatchObject({ waiting: 2 });

    await release((await running())[0]);
    expect((await getJob(next.job_id)).status).toBe("running");
    expect(await lineCounts()).toMatchObject({ waiting: 0, running: LIMIT });
  });

  it("takes back a slot granted as a job joined, a minute later, when the job was never made, though no one waits", async () => {
    await release((await running())[0]);
    const before = await lineCounts();
    // A submit that took a slot and died before it made its job.
    const ghost = "run_GhostGhostGhostGhostGhost";
    expect(await lineStub().join({ job_id: ghost, priority: 5, concurrency_key: null, start_at: null, ttl_s: null })).toEqual({ ok: true, granted: true });
    expect(await lineCounts()).toMatchObject({ running: before.running + 1, waiting: 0 });
    await fireLine();
    expect(await lineCounts()).toMatchObject({ running: before.running + 1 }); // asked only a minute on

    await askSlotsGrantedAtJoin();
    expect(await lineCounts()).toMatchObject({ running: before.running, waiting: 0 });
  });

  it("takes back a slot held for a job that was never created, once it has been held a while, when jobs wait: the audit", async () => {
    // A slot held with nothing asking after it (one granted before slots were asked about).
    const ghost = "run_GhostGhostGhostGhostGhos2";
    expect(await lineStub().join({ job_id: ghost, priority: 5, concurrency_key: null, start_at: null, ttl_s: null })).toEqual({ ok: true, granted: true });
    await runInDurableObject(lineStub(), (_i, state) => {
      state.storage.sql.exec("UPDATE places SET told = 1, retry_at = NULL WHERE job_id = ?", ghost);
    });
    const waiting = await enqueue();
    expect(waiting.status).toBe("queued");

    await fireLine();
    expect((await getJob(waiting.job_id)).status).toBe("queued"); // the slot is held, and recently

    await runInDurableObject(lineStub(), (_i, state) => {
      state.storage.sql.exec("UPDATE places SET granted_at = granted_at - 3600000 WHERE job_id = ?", ghost);
      state.storage.sql.exec("DELETE FROM audit");
    });
    await fireLine(); // the audit finds no such job...
    await fireLine(); // ...and the freed slot is granted
    expect((await getJob(waiting.job_id)).status).toBe("running");
  });
});
