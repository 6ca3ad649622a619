/** Retry from where it failed: a new job that copies the finished steps' outputs and runs the rest. */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../src/app";
import { countingStubs, failing, failingStubs, gatedBucket, jobIdOf, overlay, resetError } from "./faults";
import { api, drive, eventLog, finished, getJob, post, r2Keys, runStub, submit, submitQueued } from "./helpers";
import { newJobId } from "../src/ids";
import { HOLD_LAPSED, type PrefixHold } from "../src/run/hold";
import type { RunSpec } from "../src/run/job";
import type { Job } from "../src/schemas";

/** The hold a job's object keeps on its output prefix while its job is not made (src/run/hold.ts). */
const prefixHold = (stub: DurableObjectStub) => runInDurableObject(stub, (_instance, state) => state.storage.kv.get<PrefixHold>("prefix_hold"));
/** The hold lapses now: its time is up. */
const lapseNow = (stub: DurableObjectStub) =>
  runInDurableObject(stub, (_instance, state) => state.storage.kv.put("prefix_hold", { ...state.storage.kv.get<PrefixHold>("prefix_hold"), until: Date.now() - 1 }));

const retry = (id: string, body?: unknown) =>
  body === undefined ? api(`/api/v1/runs/${id}/retry`, { method: "POST" }) : post(`/api/v1/runs/${id}/retry`, body);

async function sha256(bytes: ArrayBuffer): Promise<string> {
  return [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");
}
const output = async (id: string) => (await api(`/api/v1/runs/${id}/output`)).arrayBuffer();
const part = async (id: string, step: number) => (await env.OUTPUTS.get(`runs/default/${id}/steps/${String(step).padStart(4, "0")}`))!.arrayBuffer();

/** A 3-step job whose step 2 failed: step 1's output is kept. */
async function failedAtStep2(prompt = "retry me"): Promise<Job> {
  const job = await drive(await submit({ steps: 3, fail_at_step: 2, output_bytes: 3 * 50_000 }, { prompt }));
  expect(job).toMatchObject({ status: "failed", progress: { steps_completed: 1 } });
  return job;
}
const fixed = { config: { simulate: { steps: 3, step_ms: 1, output_bytes: 3 * 50_000 } } };

describe("POST /api/v1/runs/{id}/retry", () => {
  it("starts a new job at the first unfinished step, the finished ones copied byte for byte", async () => {
    const old = await failedAtStep2();
    const sent = Date.now();
    const res = await retry(old.job_id, fixed);
    expect(res.status).toBe(202);
    const accepted = await res.json<{ job_id: string; status: string; poll_url: string; created_at: string }>();
    expect(accepted.job_id).not.toBe(old.job_id);
    expect(accepted.poll_url).toMatch(new RegExp(`/api/v1/runs/${accepted.job_id}$`));
    const fresh = await getJob(accepted.job_id);
    expect(fresh).toMatchObject({ retry_of: old.job_id, agent_id: old.agent_id, progress: { steps_completed: 1, steps_total: 3 } });
    // A new job, made when the retry was asked for: first in the list, newest first.
    expect(Date.parse(fresh.created_at)).toBeGreaterThanOrEqual(sent);
    expect(accepted.created_at).toBe(fresh.created_at);
    const listed = await (await api("/api/v1/runs?page_size=1")).json<{ jobs: { job_id: string }[] }>();
    expect(listed.jobs[0].job_id).toBe(accepted.job_id);
    expect(await sha256(await part(accepted.job_id, 1))).toBe(await sha256(await part(old.job_id, 1)));

    const done = await drive(accepted.job_id);
    expect(done.status).toBe("succeeded");
    // Step 1 was not run again: its only progress events are the copy's.
    const log = await eventLog(accepted.job_id);
    expect(log.filter((e) => e.data.includes('"current_step":"step_1"'))).toEqual([]);
    expect(log.some((e) => e.data.includes(`Retry of ${old.job_id}: the output of step 1 was copied`))).toBe(true);
    expect((await output(accepted.job_id)).byteLength).toBe(150_000);
    expect((await getJob(old.job_id)).retry_of).toBeNull();
  });

  it("from_step runs again from an earlier step, or names the first unfinished one; a later one → 400", async () => {
    const old = await failedAtStep2();
    const again = await retry(old.job_id, { ...fixed, from_step: 1 });
    expect(again.status).toBe(202);
    const id = (await again.json<{ job_id: string }>()).job_id;
    expect((await getJob(id)).progress.steps_completed).toBe(0);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect((await drive(id)).status).toBe("succeeded");

    const named = await retry(old.job_id, { ...fixed, from_step: 2 });
    expect(named.status).toBe(202);
    const fromTwo = (await named.json<{ job_id: string }>()).job_id;
    expect((await getJob(fromTwo)).progress.steps_completed).toBe(1);

    const late = await retry(old.job_id, { from_step: 3 });
    expect(late.status).toBe(400);
    expect(await late.json()).toEqual({ detail: "from_step must be at most 2, the first unfinished step" });
  });

  it("a new prompt and config keys replace the old ones; an empty body keeps them", async () => {
    const old = await failedAtStep2();
    const bare = await retry(old.job_id);
    expect(bare.status).toBe(202);
    // The same config: it fails at step 2 again.
    expect((await drive((await bare.json<{ job_id: string }>()).job_id)).error).toBe("Simulated failure at step 2 of 3");
    const changed = await retry(old.job_id, { prompt: "a new prompt", config: { simulate: { steps: 3, step_ms: 1 } } });
    const id = (await changed.json<{ job_id: string }>()).job_id;
    expect((await drive(id)).status).toBe("succeeded");
    const text = new TextDecoder().decode(await output(id));
    expect(text.endsWith("Step 3/3 (step_3): simulated answer to: a new prompt\n")).toBe(true);
  });

  it("no body stands for {} whatever its content type says, as does an empty chunked JSON body; a body that is not JSON → 400", async () => {
    const id = await submitQueued({ steps: 2 });
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    const headerSets: Record<string, string>[] = [{ "content-type": "application/json" }, { "content-type": "text/plain" }, { "content-type": "application/json", "content-length": "0" }];
    for (const headers of headerSets) {
      const res = await api(`/api/v1/runs/${id}/retry`, { method: "POST", headers });
      expect(res.status, JSON.stringify(headers)).toBe(202);
    }
    const chunkedEmpty = new ReadableStream({ start: (controller) => controller.close() });
    expect((await api(`/api/v1/runs/${id}/retry`, { method: "POST", headers: { "content-type": "application/json" }, body: chunkedEmpty })).status).toBe(202);
    const notJson = await api(`/api/v1/runs/${id}/retry`, { method: "POST", headers: { "content-type": "text/plain" }, body: "from_step=1" });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toEqual({ detail: "Content-Type must be application/json" });
    const malformed = await api(`/api/v1/runs/${id}/retry`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    expect(await malformed.json()).toEqual({ detail: "Malformed JSON in request body" });
  });

  it("retries a cancelled job too", async () => {
    const id = await submitQueued({ steps: 2 });
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    const res = await retry(id, {});
    expect(res.status).toBe(202);
    expect((await drive((await res.json<{ job_id: string }>()).job_id)).status).toBe("succeeded");
  });

  it("deleting the old job leaves the new one whole, and the other way round", async () => {
    const old = await failedAtStep2();
    const first = (await (await retry(old.job_id, fixed)).json<{ job_id: string }>()).job_id;
    const second = (await (await retry(old.job_id, fixed)).json<{ job_id: string }>()).job_id;
    await drive(first);
    const firstOutput = await sha256(await output(first));
    expect((await api(`/api/v1/runs/${old.job_id}`, { method: "DELETE" })).status).toBe(204);
    expect(await sha256(await output(first))).toBe(firstOutput);
    expect((await drive(second)).status).toBe("succeeded");
    expect(await sha256(await output(second))).toBe(firstOutput);

    const other = await failedAtStep2("the other way round");
    const copy = (await (await retry(other.job_id, fixed)).json<{ job_id: string }>()).job_id;
    const before = await sha256(await output(other.job_id));
    expect((await api(`/api/v1/runs/${copy}?force=true`, { method: "DELETE" })).status).toBe(204);
    expect(await sha256(await output(other.job_id))).toBe(before);
    expect(await r2Keys(`runs/default/${copy}/`)).toEqual([]);
  });

  it.each([
    ["succeeded", async () => finished({ steps: 1 })],
    ["queued", async () => submitQueued()],
    ["running", async () => submit({ steps: 2 })],
  ])("a %s job → 400", async (_status, make) => {
    const res = await retry(await make(), {});
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Only failed or cancelled jobs can be retried" });
  });

  it("runs the old job's steps: a simulate.steps of another count, or a knob past those steps → 422 naming it, and no job made", async () => {
    const old = await failedAtStep2();
    const retries = async () =>
      (await (await api("/api/v1/runs?page_size=100")).json<{ jobs: Job[] }>()).jobs.filter((job) => job.retry_of === old.job_id);
    const refused: [Record<string, number>, string, string][] = [
      [{ steps: 5, step_ms: 1 }, "steps", "a retry runs the old job's 3 steps"],
      [{ fail_at_step: 4 }, "fail_at_step", "fail_at_step must be at most the job's steps (3)"],
      [{ steps: 3, input_at_step: 4 }, "input_at_step", "input_at_step must be at most the job's steps (3)"],
    ];
    for (const [simulate, knob, msg] of refused) {
      const res = await retry(old.job_id, { config: { simulate } });
      expect(res.status, JSON.stringify(simulate)).toBe(422);
      expect(await res.json()).toEqual({ detail: [{ loc: ["body", "config", "simulate", knob], msg, type: "value_error" }] });
    }
    expect(await retries()).toEqual([]);
    // The same count is the old job's own: accepted, and the retry runs the steps left.
    const same = await retry(old.job_id, { config: { simulate: { steps: 3, step_ms: 1, fail_at_step: 3 } } });
    expect(same.status).toBe(202);
    const done = await drive((await same.json<{ job_id: string }>()).job_id);
    expect(done).toMatchObject({ status: "failed", progress: { steps_completed: 2, steps_total: 3 } });
  });

  it("an unknown job → 404; a bad body → 422", async () => {
    expect((await retry("run_unknown", {})).status).toBe(404);
    const old = await failedAtStep2();
    for (const body of [{ from_step: 0 }, { from_step: "1" }, { prompt: "" }, { config: { simulate: { steps: 0 } } }]) {
      expect((await retry(old.job_id, body)).status, JSON.stringify(body)).toBe(422);
    }
  });
});

describe("a retry with an Idempotency-Key", () => {
  const keyed = (id: string, key: string, body: unknown = fixed) =>
    post(`/api/v1/runs/${id}/retry`, body, { "Idempotency-Key": key });
  const retriesOf = async (id: string) =>
    (await (await api("/api/v1/runs?page_size=100")).json<{ jobs: Job[] }>()).jobs.filter((job) => job.retry_of === id).map((job) => job.job_id);
  /** The R2 keys made since `before`, each under one of the jobs given. */
  const madeSince = async (before: string[]) => {
    const known = new Set(before);
    return (await r2Keys("runs/default/")).filter((key) => !known.has(key));
  };

  it("is made once: a repeat answers with the same job, copying nothing more, also after it ended", async () => {
    const old = await failedAtStep2("keyed retry");
    const before = await r2Keys("runs/default/");
    const first = await keyed(old.job_id, "retry-once");
    expect(first.status).toBe(202);
    expect(first.headers.get("Idempotent-Replayed")).toBeNull();
    const { job_id } = await first.json<{ job_id: string }>();
    const again = await keyed(old.job_id, "retry-once");
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(job_id);
    expect(await retriesOf(old.job_id)).toEqual([job_id]);
    expect(await madeSince(before)).toEqual([`runs/default/${job_id}/steps/0001`]);

    expect((await drive(job_id)).status).toBe("succeeded");
    const late = await keyed(old.job_id, "retry-once");
    expect(late.headers.get("Idempotent-Replayed")).toBe("true");
    expect(await late.json()).toMatchObject({ job_id, status: "succeeded" });
    expect(await retriesOf(old.job_id)).toEqual([job_id]);
    // The old job deleted: the repeat still names the job the first made.
    expect((await api(`/api/v1/runs/${old.job_id}`, { method: "DELETE" })).status).toBe(204);
    const afterDelete = await keyed(old.job_id, "retry-once");
    expect(afterDelete.status).toBe(202);
    expect((await afterDelete.json<{ job_id: string }>()).job_id).toBe(job_id);
  });

  it("the same key with another body, for another job, or held by a submit → 409, and nothing made", async () => {
    const old = await failedAtStep2("keyed conflicts");
    const { job_id } = await (await keyed(old.job_id, "retry-conflict")).json<{ job_id: string }>();
    const before = await r2Keys("runs/default/");
    const otherBody = await keyed(old.job_id, "retry-conflict", { ...fixed, from_step: 1 });
    expect(otherBody.status).toBe(409);
    expect(await otherBody.json()).toMatchObject({ detail: "Job already exists with this idempotency key", job_id });
    const other = await failedAtStep2("another job, the same key");
    expect((await keyed(other.job_id, "retry-conflict")).status).toBe(409);
    expect(await retriesOf(other.job_id)).toEqual([]);
    const submitted = await post("/api/v1/runs", { prompt: "keyed submit" }, { "Idempotency-Key": "submit-then-retry" });
    expect(submitted.status).toBe(202);
    expect((await keyed(old.job_id, "submit-then-retry")).status).toBe(409);
    expect(await retriesOf(old.job_id)).toEqual([job_id]);
    expect((await madeSince(before)).filter((key) => !key.includes(other.job_id))).toEqual([]);
  });

  it("two at once with one key make one job; the other's copies are removed", async () => {
    const old = await failedAtStep2("keyed race");
    const before = await r2Keys("runs/default/");
    const answers = await Promise.all([keyed(old.job_id, "retry-race"), keyed(old.job_id, "retry-race")]);
    expect(answers.map((res) => res.status)).toEqual([202, 202]);
    const ids = await Promise.all(answers.map(async (res) => (await res.json<{ job_id: string }>()).job_id));
    expect(ids[0]).toBe(ids[1]);
    expect(answers.filter((res) => res.headers.get("Idempotent-Replayed") === "true")).toHaveLength(1);
    expect(await retriesOf(old.job_id)).toEqual([ids[0]]);
    expect(await madeSince(before)).toEqual([`runs/default/${ids[0]}/steps/0001`]);
  });

  it("a malformed key → 400, and nothing made", async () => {
    const old = await failedAtStep2("keyed badly");
    for (const [key, detail] of [
      ["", "Idempotency-Key must be 1 to 256 characters"],
      ["a, b", "Idempotency-Key must be sent once, without commas"],
    ]) {
      const res = await keyed(old.job_id, key);
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ detail });
    }
    expect(await retriesOf(old.job_id)).toEqual([]);
  });
});

describe("a retry too large for its object to store", () => {
  it("a new prompt beside the old job's large config → 413, nothing copied, no job made", async () => {
    // Each within the body limit; together over what a job may hold.
    const old = await drive(await submit({ steps: 2, fail_at_step: 2 }, { prompt: "small", config: { notes: "n".repeat(1_000_000), simulate: { steps: 2, fail_at_step: 2, step_ms: 1 } } }));
    expect(old.status).toBe("failed");
    const before = await r2Keys("runs/default/");
    const res = await retry(old.job_id, { prompt: "p".repeat(1_000_000) });
    expect(res.status).toBe(413);
    expect((await res.json<{ detail: string }>()).detail).toMatch(/^Job too large: its prompt, agent and config come to more than the 2000000 bytes a job may hold as stored/);
    expect(await r2Keys("runs/default/")).toEqual(before);
    const listed = (await (await api("/api/v1/runs?page_size=100")).json<{ jobs: Job[] }>()).jobs;
    expect(listed.filter((job) => job.retry_of === old.job_id)).toEqual([]);
    // Its own prompt kept, the retry fits.
    expect((await retry(old.job_id, {})).status).toBe(202);
  });
});

describe("a retry that fails part-way", () => {
  const retryWith = (id: string, settings: Partial<Env>) =>
    app.request(`http://localhost/api/v1/runs/${id}/retry`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }, overlay(env, settings));

  it("its new job not made: 500, its copies of the old job's outputs removed, the old job as it was", async () => {
    const old = await failedAtStep2();
    const before = await sha256(await output(old.job_id));
    const failed = failingStubs(env.RUNS, "create", [1], "before");
    const res = await retryWith(old.job_id, { RUNS: failed.proxy });
    expect(res.status).toBe(500);
    const id = jobIdOf(failed.names[0]);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(await sha256(await output(old.job_id))).toBe(before);
    expect((await retry(old.job_id, {})).status).toBe(202);
  });

  it("the old job deleted while its outputs were copied: 404 as an unknown job, and no copy kept", async () => {
    // Two finished steps: the first is being copied when the old job goes, the second is gone.
    const old = await drive(await submit({ steps: 3, fail_at_step: 3, output_bytes: 3 * 50_000 }));
    const gate = gatedBucket(env.OUTPUTS);
    const made: string[] = [];
    const answer = retryWith(old.job_id, { OUTPUTS: gate.proxy, RUNS: countingStubs(env.RUNS, "run", made, true) });
    await gate.reached;
    expect((await api(`/api/v1/runs/${old.job_id}`, { method: "DELETE" })).status).toBe(204);
    gate.open();
    const res = await answer;
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: `Job not found: ${old.job_id}` });
    expect(made.filter((call) => call.endsWith(".create"))).toEqual([]);
    // The new job's prefix, from the key its first copy was put under.
    const prefix = gate.keys[0].slice(0, gate.keys[0].indexOf("/steps/") + 1);
    expect(prefix).toMatch(/^runs\/default\/run_[A-Za-z0-9]+\/$/);
    expect(await r2Keys(prefix)).toEqual([]);
  });

  it("stopped while it copies the old job's outputs: its new job's object holds the prefix, and purges the copies once the hold lapses", async () => {
    // Two finished steps. The Worker stops during the second copy: here the copy fails, and so
    // does the retry's own clean-up, as if it never ran.
    const old = await drive(await submit({ steps: 3, fail_at_step: 3, output_bytes: 3 * 50_000 }));
    const put = failing(env.OUTPUTS, "put", [2], "before");
    const stopped = failing(put.proxy, "delete", [1, 2, 3], "before");
    const keys: string[] = [];
    const bucket = new Proxy(stopped.proxy, {
      get: (target, prop) => (prop === "put" ? (key: string, ...rest: unknown[]) => (keys.push(key), (target.put as (...a: unknown[]) => unknown)(key, ...rest)) : Reflect.get(target, prop)),
    });
    const res = await retryWith(old.job_id, { OUTPUTS: bucket as R2Bucket });
    expect(res.status).toBe(500);
    const prefix = keys[0].slice(0, keys[0].indexOf("/steps/") + 1);
    const id = prefix.split("/")[2];
    expect(await r2Keys(prefix)).toHaveLength(1);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    const held = runStub(id);
    const hold = () => prefixHold(held);
    expect(await hold()).toMatchObject({ tenant: "default", job_id: id, lapsed: false });
    // Its alarm before the hold lapses (a retry may still be copying) keeps the copy.
    await runDurableObjectAlarm(held);
    expect(await r2Keys(prefix)).toHaveLength(1);
    await lapseNow(held);
    await runDurableObjectAlarm(held);
    expect(await r2Keys(prefix)).toEqual([]);
    expect(await hold()).toMatchObject({ lapsed: true });
    // A retry still under way, if any, is refused from here on: another hold, or its job.
    expect(await held.holdPrefix("default", id)).toMatchObject({ ok: false, detail: HOLD_LAPSED });
    const source = (await runStub(old.job_id).retrySource()) as unknown as { spec: RunSpec };
    const copy = { key: `${prefix}steps/0001`, bytes: 1, etag: "gone", idx: 1, note: null };
    expect(await held.create({ ...source.spec, job_id: id, retry_of: old.job_id }, true, [copy], null)).toMatchObject({ ok: false, detail: HOLD_LAPSED });
    // A day on, nothing of it is left.
    await lapseNow(held);
    await runDurableObjectAlarm(held);
    expect(await hold()).toBeUndefined();
    expect(await runDurableObjectAlarm(held)).toBe(false);
    // The old job is as it was, and a retry sent again copies both its steps.
    const again = await retry(old.job_id, {});
    expect(again.status).toBe(202);
    const { job_id } = await again.json<{ job_id: string }>();
    expect(await r2Keys(`runs/default/${job_id}/`)).toHaveLength(2);
    expect((await getJob(job_id)).progress.steps_completed).toBe(2);
  });

  it("a lapsed hold whose purge fails is purged by a later alarm", async () => {
    const id = newJobId();
    const held = runStub(id);
    expect(await held.holdPrefix("default", id)).toEqual({ ok: true });
    await env.OUTPUTS.put(`runs/default/${id}/steps/0001`, "a copy");
    // The hold's R2 fails its first delete (the hold took its bindings when the object started); the hold lapses now.
    await runInDurableObject(held, (instance) => {
      const hold = (instance as unknown as { hold: { env: Env } }).hold;
      hold.env = overlay(hold.env, { OUTPUTS: failing(env.OUTPUTS, "delete", [1], "before").proxy });
    });
    await lapseNow(held);
    await runDurableObjectAlarm(held);
    expect(await r2Keys(`runs/default/${id}/`)).toHaveLength(1);
    expect(await prefixHold(held)).toMatchObject({ lapsed: false });
    expect(await runDurableObjectAlarm(held)).toBe(true);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect(await prefixHold(held)).toMatchObject({ lapsed: true });
  });

  it("a retry that makes its job drops the hold on its prefix: the job owns it", async () => {
    const old = await failedAtStep2();
    const res = await retry(old.job_id, fixed);
    const { job_id } = await res.json<{ job_id: string }>();
    expect(await prefixHold(runStub(job_id))).toBeUndefined();
    expect(await r2Keys(`runs/default/${job_id}/`)).toHaveLength(1);
  });

  it("a keyed retry cut short after making its new job: the repeat's job holds the key, and the first discards itself", async () => {
    const old = await failedAtStep2("keyed retry cut short");
    const keyedWith = (settings: Partial<Env>) =>
      app.request(
        `http://localhost/api/v1/runs/${old.job_id}/retry`,
        { method: "POST", headers: { "content-type": "application/json", "Idempotency-Key": "retry-cut-short" }, body: JSON.stringify(fixed) },
        overlay(env, settings),
      );
    // Its Worker stops between making the job and the projection's entry: here the entry fails, and so does undoing it.
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const cut = await keyedWith({ RUNS: discardFails.proxy, PROJECTIONS: failingStubs(env.PROJECTIONS, "admit", [1], "before").proxy });
    expect(cut.status).toBe(500);
    const first = jobIdOf(discardFails.names[0]);
    expect((await getJob(first)).retry_of).toBe(old.job_id);

    const again = await keyedWith({});
    expect(again.status).toBe(202);
    const { job_id: second } = await again.json<{ job_id: string }>();
    expect(second).not.toBe(first);
    for (let i = 0; i < 20 && (await api(`/api/v1/runs/${first}`)).status === 200; i++) await runDurableObjectAlarm(runStub(first));
    expect((await api(`/api/v1/runs/${first}`)).status).toBe(404);
    expect(await r2Keys(`runs/default/${first}/`)).toEqual([]);

    const listedRetries = (await (await api("/api/v1/runs?page_size=100")).json<{ jobs: Job[] }>()).jobs.filter((job) => job.retry_of === old.job_id);
    expect(listedRetries.map((job) => job.job_id)).toEqual([second]);
    const late = await keyedWith({});
    expect(late.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await late.json<{ job_id: string }>()).job_id).toBe(second);
  });

  it("removing its copies failing too: the retry's own failure is the answer", async () => {
    const old = await failedAtStep2();
    const failed = failingStubs(env.RUNS, "create", [1], "before", resetError);
    const res = await retryWith(old.job_id, { RUNS: failed.proxy, OUTPUTS: failing(env.OUTPUTS, "delete", [1], "before").proxy });
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ detail: "Service unavailable; retry shortly" });
    // What could not be removed is logged ("undoing a failed submit"), with the new job's id.
    expect(await r2Keys(`runs/default/${jobIdOf(failed.names[0])}/`)).toHaveLength(1);
  });
});
