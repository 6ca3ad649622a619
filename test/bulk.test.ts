/** Bulk cancel and delete: matched at the request, carried out by the operation's alarm in batches. */
import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { BULK_MIGRATIONS, BULK_REACH_ATTEMPTS, BULK_RETENTION_MS } from "../src/bulk/BulkObject";
import { migrate } from "../src/storage/migrations";
import { failing, failingStubs, resetError, withBindings } from "./faults";
import { api, finished, getJob, post, r2Keys, runStub, storedTables, submit, submitQueued } from "./helpers";

type Progress = { bulk_id: string; action: string; matched: number; done: number; skipped: number; failed: number; state: string };

const bulkStub = (bulkId: string) => env.BULKS.getByName(`default/${bulkId}`);
const progress = async (bulkId: string) => (await api(`/api/v1/runs/bulk/${bulkId}`)).json<Progress>();

/** Makes the job's object fail every call, as one that cannot answer would: its spec's table gone. Answers the spec, to put back. */
const breakJob = (id: string) =>
  runInDurableObject(runStub(id), (_instance, state) => {
    const { body } = state.storage.sql.exec<{ body: string }>("SELECT body FROM spec").one();
    state.storage.sql.exec("DROP TABLE spec");
    return body;
  });
const mendJob = (id: string, spec: string) =>
  runInDurableObject(runStub(id), (_instance, state) => {
    state.storage.sql.exec("CREATE TABLE spec (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL)");
    state.storage.sql.exec("INSERT INTO spec (id, body) VALUES (1, ?)", spec);
  });

/** Starts a bulk operation and fires its alarm until it is done. */
async function carriedOut(action: "cancel" | "delete", body: unknown): Promise<Progress> {
  const res = await post(`/api/v1/runs/bulk/${action}`, body);
  expect(res.status).toBe(202);
  const { bulk_id, matched } = await res.json<{ bulk_id: string; matched: number }>();
  expect(res.headers.get("Location")).toMatch(new RegExp(`/api/v1/runs/bulk/${bulk_id}$`));
  expect(await progress(bulk_id)).toMatchObject({ bulk_id, action, matched, done: 0, state: matched === 0 ? "done" : "running" });
  for (let i = 0; i < 20 && (await progress(bulk_id)).state === "running"; i++) await runDurableObjectAlarm(bulkStub(bulk_id));
  return progress(bulk_id);
}

describe("bulk cancel and delete", () => {
  it("cancels every unfinished job of a session, skipping the finished ones", async () => {
    const session = `bulk-cancel-${Date.now()}`;
    const open = [await submitQueued({}, { session_id: session }), await submit({ steps: 2 }, { session_id: session })];
    const done = await finished({ steps: 1 }, { session_id: session });
    const other = await submitQueued({}, { session_id: "someone else" });
    const report = await carriedOut("cancel", { session_id: session });
    expect(report).toMatchObject({ action: "cancel", matched: 3, done: 2, skipped: 1, failed: 0, state: "done" });
    for (const id of open) expect((await getJob(id)).status).toBe("cancelled");
    expect((await getJob(done)).status).toBe("succeeded");
    expect((await getJob(other)).status).toBe("queued");
  });

  it("deletes finished jobs by status, each purged as DELETE purges it; unfinished ones are skipped without force", async () => {
    const session = `bulk-delete-${Date.now()}`;
    const ended = [await finished({ steps: 2, output_bytes: 2048 }, { session_id: session }), await finished({ steps: 1 }, { session_id: session })];
    const running = await submit({ steps: 2 }, { session_id: session });
    const report = await carriedOut("delete", { session_id: session });
    expect(report).toMatchObject({ matched: 3, done: 2, skipped: 1, failed: 0 });
    for (const id of ended) {
      expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
      expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
      expect(await storedTables(id)).toEqual([]);
    }
    expect((await api(`/api/v1/runs?session_id=${session}`).then((r) => r.json<{ total: number }>())).total).toBe(1);
    expect((await getJob(running)).status).toBe("running");

    const forced = await carriedOut("delete", { session_id: session, force: true });
    expect(forced).toMatchObject({ matched: 1, done: 1 });
    expect((await api(`/api/v1/runs/${running}`)).status).toBe(404);
  });

  it("by ids: unknown and other tenants' ids are skipped; by created_before and status", async () => {
    const a = await submitQueued();
    const report = await carriedOut("cancel", { job_ids: [a, "run_doesnotexist", "not-a-job-id"] });
    expect(report).toMatchObject({ matched: 3, done: 1, skipped: 2, failed: 0 });

    const cutoff = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    const after = await submitQueued();
    // The cutoff as an offset of +01:00 without its colon, which ISO 8601 allows too.
    const east = new Date(Date.parse(cutoff) + 3600_000).toISOString();
    const byTime = await carriedOut("cancel", { status: "queued", created_before: `${east.slice(0, 23)}+0100` });
    // The projection may still list as queued a job cancelled a moment ago: that one is skipped.
    expect(byTime.done + byTime.skipped).toBe(byTime.matched);
    expect(byTime.failed).toBe(0);
    expect((await getJob(after)).status).toBe("queued");
  });

  it("by tags: only the jobs carrying every tag given", async () => {
    const both = await submitQueued({}, { tags: ["team:a", "nightly"] });
    const one = await submitQueued({}, { tags: ["team:a"] });
    const none = await submitQueued();
    expect((await getJob(both)).tags).toEqual(["team:a", "nightly"]);
    const report = await carriedOut("cancel", { tags: ["nightly", "team:a"] });
    expect(report).toMatchObject({ matched: 1, done: 1 });
    expect((await getJob(both)).status).toBe("cancelled");
    expect((await getJob(one)).status).toBe("queued");
    expect((await getJob(none)).status).toBe("queued");
  });

  it("by metadata: one user's jobs, finished or not, and no one else's (erasing a user)", async () => {
    const user = `u-${Date.now()}`;
    const mine = [
      await finished({}, { metadata: { user } }),
      await submitQueued({}, { metadata: { user } }),
      await finished({}, { metadata: { user, plan: "pro" } }),
    ];
    const others = [await finished({}, { metadata: { user: `${user}-2` } }), await finished({}, { metadata: { owner: user } }), await finished()];
    expect(await r2Keys(`runs/default/${mine[0]}/`)).not.toEqual([]);
    // Every key given must hold: no job of this user is on that plan.
    expect(await carriedOut("delete", { metadata: { user, plan: "free" }, force: true })).toMatchObject({ matched: 0, state: "done" });
    expect(await carriedOut("delete", { metadata: { user }, force: true })).toMatchObject({ matched: 3, done: 3, skipped: 0, failed: 0, state: "done" });
    for (const id of mine) expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(await r2Keys(`runs/default/${mine[0]}/`)).toEqual([]);
    const listed = await (await api(`/api/v1/runs?metadata.user=${user}`)).json<{ total: number }>();
    expect(listed.total).toBe(0);
    for (const id of others) expect((await api(`/api/v1/runs/${id}`)).status).toBe(200);
  });

  it("works in batches of 100 across alarms", { timeout: 60_000 }, async () => {
    const session = `bulk-batches-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 130; i++) ids.push(await submitQueued({}, { session_id: session }));
    const res = await post("/api/v1/runs/bulk/cancel", { session_id: session });
    const { bulk_id } = await res.json<{ bulk_id: string }>();
    await runDurableObjectAlarm(bulkStub(bulk_id));
    expect(await progress(bulk_id)).toMatchObject({ matched: 130, done: 100, state: "running" });
    await runDurableObjectAlarm(bulkStub(bulk_id));
    expect(await progress(bulk_id)).toMatchObject({ matched: 130, done: 130, state: "done" });
  });

  it("a job it cannot reach is asked again by later alarms: done once it answers, failed after a bounded number of tries", async () => {
    const session = `bulk-unreached-${Date.now()}`;
    const [flaky, broken, fine] = [await submitQueued({}, { session_id: session }), await submitQueued({}, { session_id: session }), await submitQueued({}, { session_id: session })];
    const [flakySpec, brokenSpec] = [await breakJob(flaky), await breakJob(broken)];
    await abortAllDurableObjects();
    const res = await post("/api/v1/runs/bulk/cancel", { session_id: session });
    const { bulk_id } = await res.json<{ bulk_id: string }>();
    const askedFrom = Date.now();
    await runDurableObjectAlarm(bulkStub(bulk_id));
    expect(await progress(bulk_id)).toMatchObject({ matched: 3, done: 1, failed: 0, state: "running" });
    // Asked again only after RETRY_BASE_MS (1 s) beyond the alarms' delay here (an hour): a job that cannot be reached is not asked in a loop.
    const nextAsk = await runInDurableObject(bulkStub(bulk_id), (_instance, state) => state.storage.getAlarm());
    expect(nextAsk).toBeGreaterThanOrEqual(askedFrom + 3_600_000 + 1000);
    // One comes back before the next alarm (a deploy's reset over, say).
    await mendJob(flaky, flakySpec);
    for (let i = 1; i < BULK_REACH_ATTEMPTS; i++) await runDurableObjectAlarm(bulkStub(bulk_id));
    expect(await progress(bulk_id)).toMatchObject({ matched: 3, done: 2, skipped: 0, failed: 1, state: "done" });
    expect((await getJob(flaky)).status).toBe("cancelled");
    expect((await getJob(fine)).status).toBe("cancelled");
    await mendJob(broken, brokenSpec);
    expect((await getJob(broken)).status).toBe("queued");
  });

  it("a job whose answer was lost is asked again and counted done, not skipped: the first ask cancelled or deleted it", async () => {
    for (const action of ["cancel", "delete"] as const) {
      const session = `bulk-lost-${action}-${Date.now()}`;
      const [lost, answered] = [await submitQueued({}, { session_id: session }), await submitQueued({}, { session_id: session })];
      const res = await post(`/api/v1/runs/bulk/${action}`, { session_id: session, force: action === "delete" ? true : undefined });
      const { bulk_id } = await res.json<{ bulk_id: string }>();
      // The first call does its work, and its answer never comes (the job's object reset before it answered).
      await withBindings(bulkStub(bulk_id), { RUNS: failingStubs(env.RUNS, action, [1], "after", resetError).proxy });
      await runDurableObjectAlarm(bulkStub(bulk_id));
      expect(await progress(bulk_id)).toMatchObject({ matched: 2, done: 1, skipped: 0, failed: 0, state: "running" });
      await runDurableObjectAlarm(bulkStub(bulk_id));
      expect(await progress(bulk_id)).toMatchObject({ matched: 2, done: 2, skipped: 0, failed: 0, state: "done" });
      for (const id of [lost, answered]) {
        if (action === "cancel") expect((await getJob(id)).status).toBe("cancelled");
        else expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
      }
    }
  });

  it("an operation whose record of its asks was lost asks again, and counts the jobs those asks reached done", async () => {
    for (const action of ["cancel", "delete"] as const) {
      const session = `bulk-reset-${action}-${Date.now()}`;
      const ids = [await submitQueued({}, { session_id: session }), await submitQueued({}, { session_id: session })];
      const res = await post(`/api/v1/runs/bulk/${action}`, { session_id: session, force: action === "delete" ? true : undefined });
      const { bulk_id } = await res.json<{ bulk_id: string }>();
      // Every ask does its work, and what the operation then writes of them is lost, as when its
      // object is reset (a deploy, a crash) before it has written them.
      await runInDurableObject(bulkStub(bulk_id), (_instance, state) => {
        state.storage.transactionSync = () => {
          throw new Error("injected: the operation's object reset before it wrote what its asks came to");
        };
      });
      await runDurableObjectAlarm(bulkStub(bulk_id));
      await abortAllDurableObjects();
      expect(await progress(bulk_id)).toMatchObject({ matched: 2, done: 0, skipped: 0, state: "running" });
      await runDurableObjectAlarm(bulkStub(bulk_id));
      expect(await progress(bulk_id)).toMatchObject({ matched: 2, done: 2, skipped: 0, failed: 0, state: "done" });
      for (const id of ids) {
        if (action === "cancel") expect((await getJob(id)).status).toBe("cancelled");
        else expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
      }
    }
  });

  it("an operation begun by the version before the count of tries goes on after the deploy, its jobs asked again too", async () => {
    const [unreachable, open] = [await submitQueued(), await submitQueued()];
    await breakJob(unreachable);
    // The operation's tables as that version made them, its jobs recorded, nothing asked yet.
    await runInDurableObject(bulkStub("bulk_begunbyversionbefore0001"), async (_instance, state) => {
      migrate(state.storage, BULK_MIGRATIONS.slice(0, 3));
      state.storage.sql.exec("INSERT INTO operation (id, bulk_id, tenant, action, force, created_at) VALUES (1, 'bulk_begunbyversionbefore0001', 'default', 'cancel', 0, ?)", Date.now());
      for (const id of [unreachable, open]) state.storage.sql.exec("INSERT INTO targets (job_id) VALUES (?)", id);
      await state.storage.setAlarm(Date.now() + 3_600_000);
    });
    await abortAllDurableObjects();
    for (let i = 0; i < BULK_REACH_ATTEMPTS; i++) await runDurableObjectAlarm(bulkStub("bulk_begunbyversionbefore0001"));
    expect(await progress("bulk_begunbyversionbefore0001")).toMatchObject({ matched: 2, done: 1, failed: 1, state: "done" });
    expect((await getJob(open)).status).toBe("cancelled");
  });

  it("a job whose purge fails is counted done: it is gone at once, and its own alarm finishes the purge", async () => {
    const id = await finished({ steps: 1, output_bytes: 2000 });
    await withBindings(id, { OUTPUTS: failing(env.OUTPUTS, "delete", [1], "before").proxy });
    expect(await carriedOut("delete", { job_ids: [id] })).toMatchObject({ matched: 1, done: 1, skipped: 0, failed: 0, state: "done" });
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    await runDurableObjectAlarm(runStub(id));
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect(await storedTables(id)).toEqual([]);
  });

  it("an id given twice is one job: matched once, done once", async () => {
    const id = await submitQueued({}, { session_id: "bulk-twice" });
    expect(await carriedOut("cancel", { job_ids: [id, id] })).toMatchObject({ matched: 1, done: 1, skipped: 0, failed: 0, state: "done" });
    expect((await getJob(id)).status).toBe("cancelled");
  });

  it("a finished operation's report is kept a week, then removed with everything the operation stored", async () => {
    const { bulk_id } = await (await post("/api/v1/runs/bulk/cancel", { job_ids: [await submitQueued()] })).json<{ bulk_id: string }>();
    await runDurableObjectAlarm(bulkStub(bulk_id));
    expect(await progress(bulk_id)).toMatchObject({ done: 1, state: "done" });
    // Its alarm within the week keeps it.
    await runDurableObjectAlarm(bulkStub(bulk_id));
    expect((await api(`/api/v1/runs/bulk/${bulk_id}`)).status).toBe(200);
    // A week on (its finish moved back a week), its alarm removes it.
    await runInDurableObject(bulkStub(bulk_id), (_instance, state) => void state.storage.sql.exec("UPDATE operation SET finished_at = ?", Date.now() - BULK_RETENTION_MS));
    await runDurableObjectAlarm(bulkStub(bulk_id));
    expect(await (await api(`/api/v1/runs/bulk/${bulk_id}`)).json()).toEqual({ detail: `Bulk operation not found: ${bulk_id}` });
    expect(await storedTables(bulkStub(bulk_id))).toEqual([]);
  });

  it("reads a null field as not given: a filter with nulls beside it works, nulls alone are no filter", async () => {
    const session = "bulk-nulls";
    const open = await submitQueued({}, { session_id: session });
    const done = await carriedOut("cancel", { session_id: session, status: null, tags: null, created_before: null, job_ids: null, force: null });
    expect(done).toMatchObject({ matched: 1, done: 1, state: "done" });
    expect((await getJob(open)).status).toBe("cancelled");
    const res = await post("/api/v1/runs/bulk/cancel", { job_ids: null, status: null });
    expect(res.status).toBe(422);
    expect(((await res.json<{ detail: { msg: string }[] }>()).detail)[0].msg).toBe(
      "Give job_ids, or a filter (status, session_id, tags, metadata, created_before), not both and not neither",
    );
  });

  it("an empty tags list is no filter: 422, and no job is touched", async () => {
    const id = await submitQueued({}, { session_id: "bulk-empty-tags" });
    for (const action of ["cancel", "delete"]) {
      const res = await post(`/api/v1/runs/bulk/${action}`, { tags: [], force: action === "delete" ? true : undefined });
      expect(res.status).toBe(422);
      expect(await res.json()).toEqual({ detail: [{ loc: ["body", "tags"], msg: "Too small: expected array to have >=1 items", type: "too_small" }] });
    }
    expect((await getJob(id)).status).toBe("queued");
  });

  it("refuses what it cannot do, with a detail", async () => {
    for (const body of [{}, { force: true }, { job_ids: [] }, { job_ids: ["run_a"], status: "failed" }, { status: "done" }, { tags: ["not a tag"] }, { job_ids: Array(1001).fill("run_a") }, { created_before: "yesterday" }, { metadata: {} }, { metadata: { user: 5 } }, { metadata: { "": "x" } }, { metadata: Object.fromEntries(["a", "b", "c", "d", "e", "f"].map((k) => [k, k])) }, { metadata: { user: "u" }, job_ids: ["run_a"] }]) {
      const res = await post("/api/v1/runs/bulk/delete", body);
      expect(res.status, JSON.stringify(body).slice(0, 50)).toBe(422);
      expect((await res.json<{ detail: unknown }>()).detail).toBeTruthy();
    }
    // A filter by the key __proto__, which a record would drop and leave no filter: refused by name.
    const proto = await post("/api/v1/runs/bulk/delete", '{"metadata":{"__proto__":"x"},"force":true}');
    expect(await proto.json()).toEqual({ detail: [{ loc: ["body", "metadata", "__proto__"], msg: "a metadata key may not be __proto__", type: "custom" }] });
    expect(await (await api("/api/v1/runs/bulk/bulk_unknown")).json()).toEqual({ detail: "Bulk operation not found: bulk_unknown" });
    expect((await api("/api/v1/runs/bulk/bulk_AAAAAAAAAAAAAAAAAAAAAAAA")).status).toBe(404);
  });
});
