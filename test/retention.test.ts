import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, finished, getJob, post, r2Keys, runStub, storedTables } from "./helpers";

describe("retention", () => {
  it("a job's own retention_seconds sets expires_at, within bounds", async () => {
    const id = await finished({ steps: 1 }, { retention_seconds: 3600 });
    const job = await getJob(id);
    expect(Date.parse(job.expires_at!) - Date.parse(job.completed_at!)).toBe(3600_000);
    for (const retention_seconds of [0, -1, 30 * 86400 + 1, 1.5, "7d"]) {
      expect((await post("/api/v1/runs", { prompt: "x", retention_seconds })).status).toBe(422);
    }
  });

  it("an expired job is purged by its alarm exactly as DELETE does", async () => {
    const id = await finished({ steps: 2, output_bytes: 10_000 }, { retention_seconds: 1, session_id: "retention" });
    expect(await r2Keys(`runs/default/${id}/`)).toHaveLength(2);
    const before = await env.PROJECTIONS.getByName("default").stats();
    await new Promise((r) => setTimeout(r, 1100));
    await runDurableObjectAlarm(runStub(id));

    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect(await storedTables(id)).toEqual([]);
    const list = await (await api("/api/v1/runs?session_id=retention")).json<{ jobs: unknown[] }>();
    expect(list.jobs).toEqual([]);
    expect((await env.PROJECTIONS.getByName("default").stats()).total_jobs).toBe(before.total_jobs - 1);
  });

  it("a job not yet expired is kept when its alarm runs", async () => {
    const id = await finished({ steps: 1 }, { retention_seconds: 3600 });
    await runDurableObjectAlarm(runStub(id));
    expect((await getJob(id)).status).toBe("succeeded");
  });
});

describe("restart", () => {
  it("an object whose outbox holds work and whose alarm was lost re-arms it when it starts", async () => {
    const id = await finished({ steps: 1 }, { retention_seconds: 30 * 86400 });
    const job = await getJob(id);
    const due = Date.now() + 600_000;
    await runInDurableObject(runStub(id), async (_i, state) => {
      state.storage.sql.exec(
        "INSERT INTO outbox (kind, payload, due_at, attempts) VALUES ('projection', ?, ?, 0)",
        JSON.stringify({ tenant: "default", job, version: 1000 }),
        due,
      );
      await state.storage.deleteAlarm();
    });
    await abortAllDurableObjects();
    await getJob(id); // the first touch starts the object
    const alarm = await runInDurableObject(runStub(id), (_i, state) => state.storage.getAlarm());
    expect(alarm).toBe(due + 3600_000); // the outbox row's time, plus the tests' alarm delay
  });
});
