/**
 * A token's submit cut short between its count and its answer (its Worker stopped): the counter
 * asks about its job a minute on, and gives the count back only if no job was made.
 */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { projectionOfKey } from "../../src/tenant/shards";
import { failingStubs, jobIdOf, resetError, restoreBindings, withBindings } from "../faults";
import { api, lineStub } from "../helpers";
import { ALPHA, bearer, fetchWith, JSON_TYPE, mint, payloadOf } from "./helpers";

const body = JSON.stringify({ prompt: "p", delay_seconds: 3600 });
const submit = (token: string, settings: Partial<Env> = {}) => fetchWith(settings, "/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body });
const submitsLeft = async (token: string) => (await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json<{ submits_left: number }>()).submits_left;

/** The token's counter (the projection shard of its id). */
const counterOf = (token: string) => env.PROJECTIONS.getByName(projectionOfKey(env, "alpha", payloadOf(token).i));

/** The submits the counter has not heard the end of. */
const unheard = (token: string) =>
  runInDurableObject(counterOf(token), (_instance, state) => state.storage.sql.exec("SELECT job_id FROM token_spends").toArray().map((r) => r.job_id));

/** A minute on: the counter's alarm asks about each submit it has not heard the end of. */
async function aMinuteOn(token: string): Promise<void> {
  await runInDurableObject(counterOf(token), (_instance, state) => {
    state.storage.sql.exec("UPDATE token_spends SET ask_at = ask_at - 60000");
  });
  expect(await runDurableObjectAlarm(counterOf(token))).toBe(true);
}

/** Faults that stop a submit as a stopped Worker would leave it: its job not made, its count not given back. */
const cutBeforeItsJob = () => ({
  RUNS: failingStubs(env.RUNS, "create", [1], "before", resetError).proxy,
  PROJECTIONS: failingStubs(env.PROJECTIONS, "refundSubmit", [1], "before").proxy,
});

describe("a token's submit cut short", () => {
  it("before its job was made: the count stands a minute, then the counter finds no job and gives it back", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    expect((await submit(token, cutBeforeItsJob())).status).toBe(503);
    expect(await submitsLeft(token)).toBe(0);
    expect((await submit(token)).status).toBe(403);
    expect(await unheard(token)).toHaveLength(1);

    await aMinuteOn(token);
    expect(await submitsLeft(token)).toBe(1);
    expect(await unheard(token)).toEqual([]);
    expect((await submit(token)).status).toBe(202);
    expect(await submitsLeft(token)).toBe(0);
  });

  it("after its job was made, the counter never told: asked a minute on, the job is found and the count stands", async () => {
    const { token } = await mint({ scopes: ["submit", "read"], session_id: `cut-${crypto.randomUUID()}`, max_submits: 2 });
    const made = await submit(token, { PROJECTIONS: failingStubs(env.PROJECTIONS, "submitMade", [1], "before").proxy });
    expect(made.status).toBe(202);
    const { job_id } = await made.json<{ job_id: string }>();
    expect(await unheard(token)).toEqual([job_id]);

    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([]);
    expect(await submitsLeft(token)).toBe(1);
    expect((await api(`/api/v1/runs/${job_id}`, { headers: bearer(token) })).status).toBe(200);
  });

  it("after its job was made and since deleted: the job's tombstone says it was made, and the count stands", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    const made = await submit(token, { PROJECTIONS: failingStubs(env.PROJECTIONS, "submitMade", [1], "before").proxy });
    const { job_id } = await made.json<{ job_id: string }>();
    expect((await api(`/api/v1/runs/${job_id}?force=true`, { method: "DELETE", headers: ALPHA })).status).toBe(204);

    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([]);
    expect(await submitsLeft(token)).toBe(0);
    expect((await submit(token)).status).toBe(403);
  });

  it("after its job was made, under a key its repeat's job took: asked before the job reports, then again; once it discards itself, its count is given back", async () => {
    const session = `cut-${crypto.randomUUID()}`;
    const { token } = await mint({ scopes: ["submit", "read"], session_id: session, max_submits: 2 });
    const keyed = (settings: Partial<Env> = {}) =>
      fetchWith(settings, "/api/v1/runs", {
        method: "POST",
        headers: { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": session },
        body: JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } } }),
      });
    // Stopped after making its job: the projection's entry, undoing it and giving the count back all fail.
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const admitFails = failingStubs(env.PROJECTIONS, "admit", [1], "before");
    const refundFails = failingStubs(admitFails.proxy, "refundSubmit", [1], "before");
    expect((await keyed({ RUNS: discardFails.proxy, PROJECTIONS: refundFails.proxy })).status).toBe(500);
    const first = env.RUNS.getByName(discardFails.names[0]);
    const again = await keyed();
    expect(again.status).toBe(202);
    const { job_id: second } = await again.json<{ job_id: string }>();
    expect(second).not.toBe(jobIdOf(discardFails.names[0]));
    expect(await submitsLeft(token)).toBe(0);

    // Asked before the first job reports: it exists, and no shard holds it yet. It may still go.
    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([jobIdOf(discardFails.names[0])]);
    expect(await submitsLeft(token)).toBe(0);

    // The first job runs its step and reports: the repeat's job holds its key, and it goes.
    for (let i = 0; i < 20 && (await first.get()).ok; i++) {
      await runDurableObjectAlarm(lineStub("alpha"));
      await runDurableObjectAlarm(first);
    }
    expect((await first.get()).ok).toBe(false);

    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([]);
    expect(await submitsLeft(token)).toBe(1);
    const listed = await (await api(`/api/v1/runs?session_id=${session}`, { headers: bearer(token) })).json<{ jobs: { job_id: string }[] }>();
    expect(listed.jobs.map((j) => j.job_id)).toEqual([second]);
  });

  it("answered with a failure after its job was made and discarded, its count's return lost: given back when asked", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    // The job is made and its answer lost: the submit discards it, answers 500, and fails to give the count back.
    const createLost = failingStubs(env.RUNS, "create", [1], "after", resetError);
    expect((await submit(token, { RUNS: createLost.proxy, PROJECTIONS: failingStubs(env.PROJECTIONS, "refundSubmit", [1], "before").proxy })).status).toBe(503);
    expect((await env.RUNS.getByName(createLost.names[0]).get()).ok).toBe(false);
    expect(await submitsLeft(token)).toBe(0);

    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([]);
    expect(await submitsLeft(token)).toBe(1);
  });

  it("after its job was made, registered nowhere while it waits in line: asked again until its token expires, then no longer", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    const keyed = (settings: Partial<Env>) =>
      fetchWith(settings, "/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": crypto.randomUUID() }, body });
    // Stopped after making its job, which waits an hour: the projection's entry, undoing it and giving the count back all fail.
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const admitFails = failingStubs(env.PROJECTIONS, "admit", [1], "before");
    expect((await keyed({ RUNS: discardFails.proxy, PROJECTIONS: failingStubs(admitFails.proxy, "refundSubmit", [1], "before").proxy })).status).toBe(500);
    const waiting = jobIdOf(discardFails.names[0]);
    expect((await env.RUNS.getByName(discardFails.names[0]).get()).ok).toBe(true);

    await aMinuteOn(token);
    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([waiting]);
    expect(await submitsLeft(token)).toBe(0);

    // Its token expires: no count matters any more, and the job is no longer asked about.
    await runInDurableObject(counterOf(token), (_instance, state) => {
      state.storage.sql.exec("UPDATE token_submits SET expires_at = ? WHERE token_id = ?", Date.now() - 1, payloadOf(token).i);
    });
    await aMinuteOn(token);
    expect(await unheard(token)).toEqual([]);
    expect((await env.RUNS.getByName(discardFails.names[0]).get()).ok).toBe(true);
  });

  it("a submit that says how it ended leaves nothing to ask about: made, refused, or failed and given back", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 2 });
    expect((await submit(token)).status).toBe(202);
    expect((await submit(token, { RUNS: failingStubs(env.RUNS, "create", [1], "before").proxy })).status).toBe(500);
    const refused = await fetchWith({}, "/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ prompt: "" }) });
    expect(refused.status).toBe(422);
    expect(await unheard(token)).toEqual([]);
    expect(await submitsLeft(token)).toBe(1);
  });

  it("asking fails (the job's object unreachable): the count stands, and the counter asks again later", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    expect((await submit(token, cutBeforeItsJob())).status).toBe(503);
    // The alarm's call into the job's object fails once.
    await withBindings(counterOf(token), { RUNS: failingStubs(env.RUNS, "get", [1], "before").proxy });
    const askedAt = Date.now();
    await aMinuteOn(token);
    expect(await unheard(token)).toHaveLength(1);
    expect(await submitsLeft(token)).toBe(0);
    // Its alarm rings again, a minute on at the soonest.
    const next = await runInDurableObject(counterOf(token), (_instance, state) => state.storage.getAlarm());
    expect(next).toBeGreaterThanOrEqual(askedAt + 60_000);
    await restoreBindings(counterOf(token));
    expect(await runDurableObjectAlarm(counterOf(token))).toBe(true);
    expect(await submitsLeft(token)).toBe(1);
    expect(await unheard(token)).toEqual([]);
  });
});
