import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { failingStubs, restoreBindings, withBindings } from "../faults";
import { api, getJob, lineStub, runStub } from "../helpers";
import { alarmOf, enqueue, fireLine, LIMIT, lineCounts, release } from "./line";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const running = async () =>
  (await api("/api/v1/runs?status=running&page_size=100").then((r) => r.json<{ jobs: { job_id: string }[] }>())).jobs.map((j) => j.job_id);

describe("wake-ups from the line", () => {
  it("a waiting job has no alarm of its own; a wake-up that is lost is told again by the line's alarm", async () => {
    for (let i = 0; i < LIMIT; i++) await enqueue({}, { steps: 3 });
    const waiting = await enqueue();
    expect(waiting.status).toBe("queued");
    expect(await alarmOf(runStub(waiting.job_id))).toBeNull();

    await withBindings(lineStub(), { RUNS: failingStubs(env.RUNS, "start", [1], "before").proxy });
    await release((await running())[0]);
    expect((await getJob(waiting.job_id)).status).toBe("queued");
    expect(await alarmOf(runStub(waiting.job_id))).toBeNull();

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

  it("takes back a slot held for a job that was never created, once it has been held a while", async () => {
    await release((await running())[0]);
    // A submit that took a slot and died before it created its job.
    const ghost = "run_GhostGhostGhostGhostGhost";
    expect(await lineStub().join({ job_id: ghost, priority: 5, concurrency_key: null, start_at: null, ttl_s: null })).toEqual({ ok: true, granted: true });
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
