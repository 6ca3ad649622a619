import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { failingStubs, restoreBindings, withBindings } from "./faults";
import { api, drive, getJob, runStub, submit } from "./helpers";

// The default limit of running jobs per tenant (MAX_RUNNING_PER_TENANT).
const LIMIT = 10;

/** One of the tenant's running jobs, from the list. */
async function aRunningJob(): Promise<string> {
  const { jobs } = await api("/api/v1/runs?status=running&page_size=1").then((r) => r.json<{ jobs: { job_id: string }[] }>());
  return jobs[0].job_id;
}

async function statuses(ids: string[]): Promise<string[]> {
  return Promise.all(ids.map(async (id) => (await getJob(id)).status));
}

describe("per-tenant concurrency", () => {
  it("runs at most N jobs at once; the rest wait queued and start first in, first out", async () => {
    // Steps long enough to be interrupted by the test, never by themselves (each alarm runs one step).
    const ids: string[] = [];
    for (let i = 0; i < LIMIT + 5; i++) ids.push(await submit({ steps: 3, fail_at_step: i === 3 ? 2 : undefined }));
    for (const id of ids) await runDurableObjectAlarm(runStub(id));

    expect(await statuses(ids)).toEqual([...Array(LIMIT).fill("running"), ...Array(5).fill("queued")]);
    expect((await api("/stats").then((r) => r.json<{ by_status: Record<string, number> }>())).by_status).toMatchObject({
      running: LIMIT,
      queued: 5,
    });

    // A later job cannot jump the line, however often its alarm runs.
    await runDurableObjectAlarm(runStub(ids[12]));
    expect((await getJob(ids[12])).status).toBe("queued");

    const waiting = ids.slice(LIMIT);
    const started: string[] = [];
    const startNext = async () => {
      for (const id of waiting.filter((w) => !started.includes(w))) {
        await runDurableObjectAlarm(runStub(id));
        if ((await getJob(id)).status === "running") started.push(id);
      }
    };

    // A job that succeeds frees its slot.
    expect((await drive(ids[0])).status).toBe("succeeded");
    await startNext();
    expect(started).toEqual([ids[10]]);

    // So does one that is cancelled...
    expect((await api(`/api/v1/runs/${ids[1]}/cancel`, { method: "POST" })).status).toBe(200);
    await startNext();
    expect(started).toEqual([ids[10], ids[11]]);

    // ...one deleted by force...
    expect((await api(`/api/v1/runs/${ids[2]}?force=true`, { method: "DELETE" })).status).toBe(204);
    await startNext();
    expect(started).toEqual([ids[10], ids[11], ids[12]]);

    // ...and one that fails.
    expect((await drive(ids[3])).status).toBe("failed");
    await startNext();
    expect(started).toEqual([ids[10], ids[11], ids[12], ids[13]]);

    const running = (await statuses(ids.filter((id) => id !== ids[2]))).filter((s) => s === "running").length;
    expect(running).toBe(LIMIT);
    expect((await getJob(ids[14])).status).toBe("queued");
  });

  it("wakes the next job by itself when a slot frees", async () => {
    const before = await api("/api/v1/runs?status=queued").then((r) => r.json<{ jobs: { job_id: string }[] }>());
    const next = before.jobs.at(-1)!.job_id; // the oldest queued job of the test above
    const holder = await aRunningJob();
    expect((await api(`/api/v1/runs/${holder}/cancel`, { method: "POST" })).status).toBe(200);
    // The wake-up armed the waiting job's alarm: firing it starts the job.
    expect(await runDurableObjectAlarm(runStub(next))).toBe(true);
    expect((await getJob(next)).status).toBe("running");
  });

  it("a job waiting in line has no alarm of its own: the index's one alarm sends a lost wake-up again", async () => {
    // Every slot is taken by now (the tests above), so a new job takes a place in line.
    const waiting = await submit({ steps: 3 });
    await runDurableObjectAlarm(runStub(waiting));
    expect((await getJob(waiting)).status).toBe("queued");
    const alarmOf = (stub: DurableObjectStub<Rpc.DurableObjectBranded>) => runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    const index = env.TENANTS.getByName("default");
    expect(await alarmOf(runStub(waiting))).toBeNull();
    expect(await alarmOf(index)).not.toBeNull();

    // A slot frees, but every wake-up is lost.
    await withBindings(index, { RUNS: failingStubs(env.RUNS, "wake", [1, 2, 3, 4, 5], "before").proxy });
    const holder = await aRunningJob();
    expect((await api(`/api/v1/runs/${holder}/cancel`, { method: "POST" })).status).toBe(200);
    expect(await alarmOf(runStub(waiting))).toBeNull();

    // The index's alarm tells the first in line again, and it starts.
    await restoreBindings(index);
    expect(await runDurableObjectAlarm(index)).toBe(true);
    expect(await runDurableObjectAlarm(runStub(waiting))).toBe(true);
    expect((await getJob(waiting)).status).toBe("running");
  });

  it("gives up a place whose job is no longer waiting, and tells the next in line instead", async () => {
    const next = await submit({ steps: 3 });
    await runDurableObjectAlarm(runStub(next)); // every slot is taken: it waits in line
    const ended = await submit({ steps: 1 });
    expect((await api(`/api/v1/runs/${ended}/cancel`, { method: "POST" })).status).toBe(200);
    // As if the ended job's last update had not reached the index yet: it still holds a place, first in line.
    const index = env.TENANTS.getByName("default");
    const places = () =>
      runInDurableObject(index, (_i, state) => state.storage.sql.exec<{ job_id: string }>("SELECT job_id FROM slots WHERE running = 0 ORDER BY seq").toArray().map((r) => r.job_id));
    await runInDurableObject(index, (_i, state) => void state.storage.sql.exec("INSERT INTO slots (job_id, seq) VALUES (?, 0)", ended));
    expect((await places())[0]).toBe(ended);

    const holder = await aRunningJob();
    expect((await api(`/api/v1/runs/${holder}/cancel`, { method: "POST" })).status).toBe(200);
    expect(await places()).not.toContain(ended);
    expect(await runDurableObjectAlarm(runStub(next))).toBe(true);
    expect((await getJob(next)).status).toBe("running");
  });
});
