import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../src/app";
import { countingStubs, failing, failingStubs, jobIdOf, overlay, resetError, withBindings, type When } from "./faults";
import { api, drive, eventLog, finished, getJob, lineStub, r2Keys, runStub, settle, storedTables, submit, submitQueued } from "./helpers";

const del = (id: string) => api(`/api/v1/runs/${id}`, { method: "DELETE" });
const listed = async (session: string) =>
  (await (await api(`/api/v1/runs?session_id=${session}`)).json<{ jobs: { job_id: string; status: string }[] }>()).jobs;

async function expectPurged(id: string, session: string) {
  expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
  expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
  expect(await storedTables(id)).toEqual([]);
  expect(await listed(session)).toEqual([]);
}

describe.each(["before", "after"] as When[])("faults %s the side effect", (when) => {
  it("R2 failing while a delete purges: 500, the job is 404 at once, the alarm finishes the purge", async () => {
    const session = `r2-delete-${when}`;
    const id = await finished({ steps: 2, output_bytes: 5000 }, { session_id: session });
    await withBindings(id, { OUTPUTS: failing(env.OUTPUTS, "delete", [1], when).proxy });

    const res = await del(id);
    expect(res.status).toBe(500);
    expect((await res.json<{ detail: string }>()).detail).toMatch(/^Job deleted, but purging its data failed and will be retried: injected delete failure/);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect((await del(id)).status).toBe(404);

    await runDurableObjectAlarm(runStub(id));
    await expectPurged(id, session);
  });

  it("the projection failing to remove the job: the alarm finishes, and a late update never brings it back", async () => {
    const session = `index-remove-${when}`;
    const id = await finished({ steps: 1 }, { session_id: session });
    const stale = await getJob(id);
    await withBindings(id, { PROJECTIONS: failingStubs(env.PROJECTIONS, "remove", [1], when).proxy });

    expect((await del(id)).status).toBe(500);
    await runDurableObjectAlarm(runStub(id));
    await expectPurged(id, session);

    await env.PROJECTIONS.getByName("default").upsert(stale, 1_000); // a late, "newer" snapshot
    expect(await listed(session)).toEqual([]);
  });

  it("the projection failing to take a status update: the job runs on and the projection catches up once", { timeout: 30_000 }, async () => {
    const session = `index-upsert-${when}`;
    const id = await submit({ steps: 2 }, { session_id: session });
    await withBindings(id, { PROJECTIONS: failingStubs(env.PROJECTIONS, "upsert", [1, 2], when).proxy });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    for (let i = 0; i < 5 && (await listed(session))[0]?.status !== "succeeded"; i++) {
      await new Promise((r) => setTimeout(r, 1100)); // the outbox retries after its backoff
      await runDurableObjectAlarm(runStub(id));
    }
    expect(await listed(session)).toMatchObject([{ job_id: id, status: "succeeded" }]);
    expect((await eventLog(id)).filter((e) => e.event === "complete")).toHaveLength(1);
  });

  it("R2 failing to store a step's output: the step is retried and its output is stored once", async () => {
    const id = await submit({ steps: 2, output_bytes: 4000 }, { prompt: "faulty put" });
    await withBindings(id, { OUTPUTS: failing(env.OUTPUTS, "put", [1], when).proxy });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([`runs/default/${id}/steps/0001`, `runs/default/${id}/steps/0002`]);
    expect((await (await api(`/api/v1/runs/${id}/output`)).text()).length).toBe(4000);
    const retries = (await eventLog(id)).filter((e) => e.data.includes("will retry"));
    expect(retries).toHaveLength(1);
  });
});

describe("a side effect that keeps failing", () => {
  it("is tried again later each time: RETRY_BASE_MS, then twice as long at each failure, up to 5 minutes", async () => {
    const id = await finished({ steps: 1, output_bytes: 1000 });
    await withBindings(id, { OUTPUTS: failing(env.OUTPUTS, "delete", [1, 2, 3, 4], "before").proxy });
    const purgeRow = () =>
      runInDurableObject(runStub(id), (_instance, state) =>
        state.storage.sql.exec<{ due_at: number; attempts: number }>("SELECT due_at, attempts FROM outbox WHERE kind = 'purge'").one(),
      );
    /** The wait the failed try set before the next: `ms`, counted from some moment while the try ran. */
    const expectWait = async (failedTry: () => Promise<unknown>, ms: number) => {
      const from = Date.now();
      await failedTry();
      const to = Date.now();
      const { due_at } = await purgeRow();
      expect(due_at - to).toBeLessThanOrEqual(ms);
      expect(due_at - from).toBeGreaterThanOrEqual(ms);
    };
    // RETRY_BASE_MS is 1 s here.
    await expectWait(() => api(`/api/v1/runs/${id}`, { method: "DELETE" }), 1000);
    await expectWait(() => runDurableObjectAlarm(runStub(id)), 2000);
    await expectWait(() => runDurableObjectAlarm(runStub(id)), 4000);
    // After many failures (an outage), no longer than 5 minutes.
    await runInDurableObject(runStub(id), (_instance, state) => void state.storage.sql.exec("UPDATE outbox SET attempts = 12 WHERE kind = 'purge'"));
    await expectWait(() => runDurableObjectAlarm(runStub(id)), 300_000);
    expect((await purgeRow()).attempts).toBe(13);
    await runDurableObjectAlarm(runStub(id));
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect(await storedTables(id)).toEqual([]);
  });
});

describe("an alarm that fails", () => {
  it("schedules itself again and the job goes on", async () => {
    const id = await submit({ steps: 1 });
    await runInDurableObject(runStub(id), (_i, state) => void state.storage.sql.exec("ALTER TABLE steps RENAME TO steps_away"));
    await runDurableObjectAlarm(runStub(id)); // the step cannot be read: the alarm fails
    expect((await getJob(id)).progress.steps_completed).toBe(0);
    await runInDurableObject(runStub(id), (_i, state) => void state.storage.sql.exec("ALTER TABLE steps_away RENAME TO steps"));
    expect(await runDurableObjectAlarm(runStub(id))).toBe(true); // it was scheduled again
    expect((await drive(id)).status).toBe("succeeded");
  });
});

describe("a write that fails inside its transaction", () => {
  it("leaves no trace: the job reads as before, and the same change succeeds once storage works", async () => {
    const id = await submitQueued({ steps: 1 });
    const sql = (statement: string) => runInDurableObject(runStub(id), (_instance, state) => void state.storage.sql.exec(statement));
    await sql("CREATE TRIGGER injected BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected storage failure'); END");

    const refused = await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
    expect(refused.status).toBe(500);
    const job = await getJob(id);
    expect(job.status).toBe("queued");
    expect(job.cancelled_at).toBeNull();

    await sql("DROP TRIGGER injected");
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    expect((await getJob(id)).status).toBe("cancelled");
  });

  it("a job's creation that fails makes nothing: no tables, no job, and the job can be made there afterwards", async () => {
    const model = await submitQueued({ steps: 2 });
    const stored = await runInDurableObject(runStub(model), (_i, state) => state.storage.sql.exec<{ body: string }>("SELECT body FROM spec").one().body);
    const id = `run_${crypto.randomUUID().replaceAll("-", "")}`;
    const spec = { ...JSON.parse(stored), job_id: id };
    // A config that cannot be written as JSON: the spec's row fails after the job's tables were made.
    const looped: Record<string, unknown> = { ...spec.config };
    looped.self = looped;

    const failed = await runStub(id)
      .create({ ...spec, config: looped }, false)
      .then(() => null, (error: Error) => error.message);
    expect(failed).toMatch(/circular/i);
    expect(await storedTables(id)).toEqual([]);
    expect((await runStub(id).get()).ok).toBe(false);

    const made = await runStub(id).create(spec, false);
    expect(made).toMatchObject({ ok: true, job: { job_id: id, status: "queued", progress: { steps_total: 2 } } });
    expect((await runStub(id).get()).ok).toBe(true);
  });
});

describe("a submit that fails part-way", () => {
  const body = (session: string) => JSON.stringify({ prompt: "part-way", session_id: session, config: { simulate: { steps: 1, step_ms: 1 } } });
  /** A submit in `session` through the Worker with `bindings` (by default its own). */
  const submitIn = (session: string, bindings: Env = env, headers: Record<string, string> = {}) =>
    app.request("http://localhost/api/v1/runs", { method: "POST", headers: { "content-type": "application/json", ...headers }, body: body(session) }, bindings);
  const placeIn = (id: string) =>
    runInDurableObject(lineStub(), (_instance, state) => state.storage.sql.exec<{ state: string }>("SELECT state FROM places WHERE job_id = ?", id).toArray()[0]);

  // Each call of the submit that can fail: before its effect, or after it (its answer lost on the way back).
  const cases = [
    ["the job's creation", "RUNS", "create", "before"],
    ["the job's creation", "RUNS", "create", "after"],
    ["the projection's entry", "PROJECTIONS", "admit", "before"],
    ["the projection's entry", "PROJECTIONS", "admit", "after"],
  ] as const;

  it.each(cases)("%s failing (%s.%s, %s its effect): 500, and nothing of the job is kept, its key free", async (_name, binding, method, when) => {
    const session = `part-way-${method}-${when}`;
    const key = { "Idempotency-Key": session };
    const made: string[] = [];
    const failed = failingStubs(env[binding], method, [1], when);
    const bindings = { RUNS: countingStubs(env.RUNS, "run", made, true), [binding]: failed.proxy };
    const res = await submitIn(session, overlay(env, bindings), key);
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ detail: "Internal server error" });
    const id = jobIdOf(binding === "RUNS" ? failed.names[0] : made[0].slice("run:".length, made[0].lastIndexOf(".")));

    // A job granted a slot at once would run: none must, nor be listed, nor hold a place in line.
    await settle(id);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(await listed(session)).toEqual([]);
    expect(await placeIn(id)).toBeUndefined();
    expect(await storedTables(id)).toEqual([]);

    // The same submit again makes a new job: the key was not kept for the one that failed.
    const again = await submitIn(session, env, key);
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBeNull();
    const { job_id } = await again.json<{ job_id: string }>();
    expect(job_id).not.toBe(id);
    expect((await listed(session)).map((j) => j.job_id)).toEqual([job_id]);
  });

  it("the job's creation reported failed by the platform after it was made: 503 with Retry-After, and the job is discarded", async () => {
    const session = "part-way-reset";
    const failed = failingStubs(env.RUNS, "create", [1], "after", resetError);
    const res = await submitIn(session, overlay(env, { RUNS: failed.proxy }));
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ detail: "Service unavailable; retry shortly" });
    expect(res.headers.get("Retry-After")).toBe("1");
    const id = jobIdOf(failed.names[0]);
    await settle(id);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(await listed(session)).toEqual([]);
    expect(await placeIn(id)).toBeUndefined();
  });

  it("a repeat of a keyed submit whose new job cannot be discarded: still answered with the job that holds the key", async () => {
    const key = { "Idempotency-Key": "part-way-repeat" };
    const first = await submitIn("part-way-repeat", env, key);
    const { job_id } = await first.json<{ job_id: string }>();
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const again = await submitIn("part-way-repeat", overlay(env, { RUNS: discardFails.proxy }), key);
    expect(discardFails.counts.n).toBe(1);
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(job_id);
  });

  /**
   * A keyed submit cut short after making its job and before the projection's entry, as when its
   * Worker stops there: here the entry fails and so does undoing it, which leaves the same. The
   * job runs, registered nowhere, and its client sends the submit again.
   */
  async function cutShort(session: string) {
    const key = { "Idempotency-Key": session };
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const admitFails = failingStubs(env.PROJECTIONS, "admit", [1], "before");
    const res = await submitIn(session, overlay(env, { RUNS: discardFails.proxy, PROJECTIONS: admitFails.proxy }), key);
    expect(res.status).toBe(500);
    const first = jobIdOf(discardFails.names[0]);
    expect((await getJob(first)).status).toBe("running");
    expect(await listed(session)).toEqual([]);
    return { first, repeat: () => submitIn(session, env, key) };
  }

  it("a keyed submit cut short after making its job: the repeat's job holds the key, and the first discards itself at its first report", async () => {
    const session = "cut-short-repeat-first";
    const { first, repeat } = await cutShort(session);
    const again = await repeat();
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBeNull();
    const { job_id: second } = await again.json<{ job_id: string }>();
    expect(second).not.toBe(first);

    // The first runs its step, then reports: the projection names the job holding its key, and it goes.
    for (let i = 0; i < 20 && (await api(`/api/v1/runs/${first}`)).status === 200; i++) await settle(first);
    expect((await api(`/api/v1/runs/${first}`)).status).toBe(404);
    expect(await storedTables(first)).toEqual([]);
    expect(await r2Keys(`runs/default/${first}/`)).toEqual([]);
    expect(await placeIn(first)).toBeUndefined();
    expect((await listed(session)).map((j) => j.job_id)).toEqual([second]);

    expect((await drive(second)).status).toBe("succeeded");
    const third = await repeat();
    expect(third.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await third.json<{ job_id: string }>()).job_id).toBe(second);
  });

  it("a keyed submit cut short after making its job: reporting before the repeat, the job takes its key, and the repeat is answered with it", async () => {
    const session = "cut-short-report-first";
    const { first, repeat } = await cutShort(session);
    expect((await drive(first)).status).toBe("succeeded");
    expect((await listed(session)).map((j) => j.job_id)).toEqual([first]);

    const again = await repeat();
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(first);
    expect((await listed(session)).map((j) => j.job_id)).toEqual([first]);
  });

  it("a keyed submit cut short after making its job: the repeat's job deleted before the first reports, the first still discards itself", async () => {
    const session = "cut-short-repeat-deleted";
    const { first, repeat } = await cutShort(session);
    const { job_id: second } = await (await repeat()).json<{ job_id: string }>();
    expect(second).not.toBe(first);
    // Its client, answered with the repeat's job, deletes it: the key is free when the first reports.
    expect((await api(`/api/v1/runs/${second}?force=true`, { method: "DELETE" })).status).toBe(204);

    for (let i = 0; i < 20 && (await api(`/api/v1/runs/${first}`)).status === 200; i++) await settle(first);
    expect((await api(`/api/v1/runs/${first}`)).status).toBe(404);
    expect(await storedTables(first)).toEqual([]);
    expect(await r2Keys(`runs/default/${first}/`)).toEqual([]);
    expect(await placeIn(first)).toBeUndefined();
    expect(await listed(session)).toEqual([]);

    // The key is free, as after any deletion: sent again, the submit makes a new job.
    const third = await repeat();
    expect(third.status).toBe(202);
    expect(third.headers.get("Idempotent-Replayed")).toBeNull();
    const { job_id } = await third.json<{ job_id: string }>();
    expect([first, second]).not.toContain(job_id);
    expect((await listed(session)).map((j) => j.job_id)).toEqual([job_id]);
  });

  it("a keyed submit cut short after making its job: a job deleted under the same key before it was made does not stand in its way", async () => {
    const session = "cut-short-after-deletion";
    const earlier = await submitIn(session, env, { "Idempotency-Key": session });
    const { job_id: deleted } = await earlier.json<{ job_id: string }>();
    expect((await drive(deleted)).status).toBe("succeeded");
    expect((await del(deleted)).status).toBe(204);
    await new Promise((r) => setTimeout(r, 5));

    const { first, repeat } = await cutShort(session);
    expect((await drive(first)).status).toBe("succeeded");
    expect((await listed(session)).map((j) => j.job_id)).toEqual([first]);
    const again = await repeat();
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(first);
  });

  it("undoing it failing too: the submit's own failure is the answer, and the job keeps its place while it exists", async () => {
    const session = "part-way-undo";
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const failed = failingStubs(discardFails.proxy, "create", [1], "after", resetError);
    const res = await submitIn(session, overlay(env, { RUNS: failed.proxy }));
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ detail: "Service unavailable; retry shortly" });
    expect(discardFails.counts.n).toBe(1);
    // The job was made and could not be discarded: it holds its run slot, not one given to another job.
    const id = jobIdOf(failed.names[0]);
    expect(await placeIn(id)).toEqual({ state: "running" });
    expect((await drive(id)).status).toBe("succeeded");
    expect(await placeIn(id)).toBeUndefined();
  });
});
