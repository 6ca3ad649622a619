import { env, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { api, drive, driveTo, getJob, post, r2Keys, runStub, settle, storedTables, waitFor } from "../helpers";
import type { Job } from "../../src/schemas";
import { failingStubs, gatedStubs, jobIdOf, overlay, withBindings } from "../faults";
import { RECEIVER_URL, WEBHOOK_SECRET_PREVIOUS, type Delivery } from "./protocol";

let counter = 0;
const token = () => `t${Date.now()}x${++counter}`;

async function deliveriesTo(tokenValue: string): Promise<Delivery[]> {
  const all = (await (await fetch(`${RECEIVER_URL}/_deliveries`)).json()) as Delivery[];
  return all.filter((d) => d.token === tokenValue);
}

async function submitWithHook(scenario: string, tokenValue: string, simulate: Record<string, number> = {}): Promise<string> {
  const res = await post("/api/v1/runs", {
    prompt: "hooked",
    webhook_url: `${RECEIVER_URL}/hooks/${scenario}/${tokenValue}`,
    config: { simulate: { steps: 1, step_ms: 1, ...simulate } },
  });
  expect(res.status).toBe(202);
  return (await res.json<{ job_id: string }>()).job_id;
}

/** Fires the job's alarm until its webhook is no longer pending (bounded; retries are 50 ms apart). */
async function settleWebhook(id: string): Promise<Job> {
  for (let i = 0; i < 200; i++) {
    const job = await getJob(id);
    if (job.webhook && job.webhook.state !== "pending") return job;
    await runDurableObjectAlarm(runStub(id));
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("the webhook never settled");
}

describe("webhooks", () => {
  it("a result that, escaped as JSON, would pass the body's bound is sent as null, once, and the delivery settles", async () => {
    const t = token();
    // 170,000 control characters: each six bytes escaped, in each of three steps' answers (3 MB).
    const prompt = "\u0001".repeat(170_000);
    const res = await post("/api/v1/runs", { prompt, webhook_url: `${RECEIVER_URL}/hooks/ok/${t}`, config: { simulate: { steps: 3, step_ms: 1 } } });
    expect(res.status).toBe(202);
    const id = (await res.json<{ job_id: string }>()).job_id;
    expect((await drive(id)).status).toBe("succeeded");
    const job = await settleWebhook(id);
    expect(job.webhook).toMatchObject({ state: "delivered", attempts: 1, last_status: 200 });
    const deliveries = await deliveriesTo(t);
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0].body).toMatchObject({ event: "run.succeeded", job_id: id, status: "succeeded", result: null, error: null });
    // Where to read it instead, as /result names it.
    const named = await (await api(`/api/v1/runs/${id}/result`)).json<{ result_url: string }>();
    expect(deliveries[0].body.result_url).toBe(named.result_url);
    // The result is whole at /result (within INLINE_RESULT_BYTES: 510 KB before escaping).
    const result = await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string }>();
    expect(result.result.split(prompt)).toHaveLength(4);
  });

  it("a succeeded job calls back once, signed, with the contract's body", async () => {
    const t = token();
    const id = await submitWithHook("ok", t);
    expect((await getJob(id)).webhook).toMatchObject({ state: "pending", attempts: 0, url: `${RECEIVER_URL}/hooks/ok/${t}` });
    await drive(id);
    const job = await settleWebhook(id);
    expect(job.webhook).toMatchObject({ state: "delivered", attempts: 1, last_status: 200, last_error: null });

    const [delivery, ...more] = await deliveriesTo(t);
    expect(more).toEqual([]);
    expect(delivery.verified).toBe(true);
    expect(delivery.id).toMatch(/^msg_/);
    expect(Math.abs(Number(delivery.timestamp) - Date.now() / 1000)).toBeLessThan(300);
    const result = await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string; result_url: string; duration_seconds: number }>();
    expect(delivery.body).toEqual({
      event: "run.succeeded",
      job_id: id,
      status: "succeeded",
      result: result.result,
      result_url: result.result_url,
      error: null,
      completed_at: job.completed_at,
      duration_seconds: result.duration_seconds,
      usage: job.usage,
    });
  });

  it("one signature, under WEBHOOK_SECRET; while it is rotated, one under each secret, so that a receiver holding either verifies the call", async () => {
    const plain = token();
    const plainId = await submitWithHook("ok", plain);
    await drive(plainId);
    await settleWebhook(plainId);
    const [signed] = await deliveriesTo(plain);
    expect(signed.signature).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect([signed.verified, signed.verifiedWithPrevious]).toEqual([true, false]);

    const rotating = token();
    const id = await submitWithHook("ok", rotating);
    await withBindings(id, { WEBHOOK_SECRET_PREVIOUS });
    await drive(id);
    expect((await settleWebhook(id)).webhook).toMatchObject({ state: "delivered", attempts: 1 });
    const [both] = await deliveriesTo(rotating);
    expect(both.signature).toMatch(/^v1,[A-Za-z0-9+/]+=* v1,[A-Za-z0-9+/]+=*$/);
    expect([both.verified, both.verifiedWithPrevious]).toEqual([true, true]);
  });

  it("retries after 500s with the same webhook-id and body until it is accepted", async () => {
    const t = token();
    const id = await submitWithHook("flaky", t);
    await drive(id);
    const job = await settleWebhook(id);
    expect(job.webhook).toMatchObject({ state: "delivered", attempts: 3, last_status: 204 });
    const deliveries = await deliveriesTo(t);
    expect(deliveries.map((d) => d.answered)).toEqual([500, 500, 204]);
    expect(new Set(deliveries.map((d) => d.id)).size).toBe(1);
    expect(deliveries.every((d) => d.verified)).toBe(true);
    expect(new Set(deliveries.map((d) => JSON.stringify(d.body))).size).toBe(1);
  });

  it("a receiver that answers 429 with Retry-After is called again no sooner than it asks", async () => {
    const t = token();
    const id = await submitWithHook("busy", t);
    await drive(id);
    const job = await settleWebhook(id);
    expect(job.webhook).toMatchObject({ state: "delivered", attempts: 2, last_status: 204 });
    const deliveries = await deliveriesTo(t);
    expect(deliveries.map((d) => d.answered)).toEqual([429, 204]);
    // The backoff alone would have called again after about 50 ms.
    expect(deliveries[1].at - deliveries[0].at).toBeGreaterThanOrEqual(1000);
  });

  it("stops at 410 Gone", async () => {
    const t = token();
    const id = await submitWithHook("gone", t);
    await drive(id);
    const job = await settleWebhook(id);
    expect(job.webhook).toMatchObject({ state: "stopped", attempts: 1, last_status: 410 });
    await runDurableObjectAlarm(runStub(id));
    expect(await deliveriesTo(t)).toHaveLength(1);
  });

  it("gives up when the retry window has passed, and the job says so", async () => {
    const t = token();
    const id = await submitWithHook("down", t);
    await drive(id);
    const job = await settleWebhook(id);
    expect(job.webhook!.state).toBe("failed");
    expect(job.webhook!.attempts).toBeGreaterThanOrEqual(2);
    expect(job.webhook!.last_status).toBe(500);
    expect((await deliveriesTo(t)).length).toBe(job.webhook!.attempts);
  });

  it("does not follow redirects", async () => {
    const t = token();
    const id = await submitWithHook("redirect", t);
    await drive(id);
    const job = await settleWebhook(id);
    expect(job.webhook).toMatchObject({ state: "failed", last_status: 302 });
    expect(await deliveriesTo(`${t}-redirected`)).toEqual([]);
  });

  it("calls back for a cancelled job", async () => {
    const t = token();
    const id = await submitWithHook("ok", t);
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    await settleWebhook(id);
    const [delivery] = await deliveriesTo(t);
    expect(delivery.verified).toBe(true);
    expect(delivery.body).toMatchObject({ job_id: id, event: "run.cancelled", status: "cancelled", result: null, error: null, duration_seconds: expect.any(Number) });
  });

  it("calls back for a failed job, with its error", async () => {
    const t = token();
    const id = await submitWithHook("ok", t, { steps: 2, fail_at_step: 2 });
    await drive(id);
    await settleWebhook(id);
    const [delivery] = await deliveriesTo(t);
    expect(delivery.body).toMatchObject({
      event: "run.failed",
      job_id: id,
      status: "failed",
      result: null,
      result_url: `http://localhost/api/v1/runs/${id}/output`,
      error: "Simulated failure at step 2 of 2",
    });
  });

  it("calls back when the job awaits input, with the request, and again when it ends", async () => {
    const t = token();
    const id = await submitWithHook("ok", t, { steps: 2, input_at_step: 1 });
    await driveTo(id, "awaiting_input");
    const asking = await settleWebhook(id);
    expect(asking.status).toBe("awaiting_input");
    const [asked] = await deliveriesTo(t);
    expect(asked.verified).toBe(true);
    expect(asked.body).toMatchObject({ event: "run.awaiting_input", job_id: id, status: "awaiting_input", result: null, input_request: asking.input_request });

    expect((await post(`/api/v1/runs/${id}/input`, { action: "reject", input: "no" })).status).toBe(200);
    await settleWebhook(id);
    const deliveries = await deliveriesTo(t);
    expect(deliveries.map((d) => (d.body as { event: string }).event)).toEqual(["run.awaiting_input", "run.failed"]);
    expect(deliveries[1].id).not.toBe(deliveries[0].id);
    expect(deliveries[1].body).toMatchObject({ status: "failed", error: "Rejected at step step_1: no" });
  });

  /**
   * A job that asks for input, its `run.awaiting_input` call held open by the receiver: the alarm
   * that asked and sends it (`alarm`) is still running when the job moves on.
   */
  async function askingWithCallHeld(t: string): Promise<{ id: string; alarm: Promise<boolean> }> {
    const id = await submitWithHook("held", t, { steps: 2, input_at_step: 1 });
    await driveTo(id, "running");
    const alarm = runDurableObjectAlarm(runStub(id)); // step 1, then the request for input
    await waitFor(async () => (await deliveriesTo(t)).length === 1, "the awaiting_input call to reach the receiver");
    expect((await getJob(id)).status).toBe("awaiting_input");
    return { id, alarm };
  }
  const release = (t: string) => fetch(`${RECEIVER_URL}/_release/${t}`, { method: "POST" });

  it("a job cancelled while its awaiting_input call is in flight still owes its cancelled call once that one is answered, and makes it", async () => {
    const t = token();
    const { id, alarm } = await askingWithCallHeld(t);
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    await release(t);
    await alarm;
    // The call answered was the earlier one: the cancelled call is owed, and not yet made.
    expect((await getJob(id)).webhook).toMatchObject({ state: "pending", attempts: 0, last_status: null });
    const next = runDurableObjectAlarm(runStub(id));
    await waitFor(async () => (await deliveriesTo(t)).length === 2, "the cancelled call", 300);
    await release(t);
    await next;
    expect((await getJob(id)).webhook).toMatchObject({ state: "delivered", attempts: 1, last_status: 200 });
    const deliveries = await deliveriesTo(t);
    expect(deliveries.map((d) => [d.body.event, d.answered])).toEqual([
      ["run.awaiting_input", 200],
      ["run.cancelled", 200],
    ]);
    expect(deliveries[1].id).not.toBe(deliveries[0].id);
  });

  it("a job deleted with force while its awaiting_input call is in flight still calls back cancelled, then leaves nothing behind", async () => {
    const t = token();
    const { id, alarm } = await askingWithCallHeld(t);
    expect((await api(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
    await release(t);
    // The same alarm goes on to the deletion's last leg: the call still owed, then removing the object.
    await waitFor(async () => (await deliveriesTo(t)).length === 2, "the cancelled call", 300);
    await release(t);
    await alarm;
    const deliveries = await deliveriesTo(t);
    expect(deliveries.map((d) => [d.body.event, d.answered])).toEqual([
      ["run.awaiting_input", 200],
      ["run.cancelled", 200],
    ]);
    expect(deliveries[1].body).toMatchObject({ job_id: id, status: "cancelled" });
    expect(await storedTables(id)).toEqual([]);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
  });

  it("a succeeded job deleted before its call went out still calls back with its result, then leaves nothing behind", async () => {
    const t = token();
    const id = await submitWithHook("ok", t, { steps: 1, output_bytes: 300 });
    await driveTo(id, "running");
    // The step's alarm holds at the line, where the job's end is told before its call goes out.
    const line = gatedStubs(env.LINES, "leave");
    await withBindings(id, { LINES: line.proxy });
    const alarm = runDurableObjectAlarm(runStub(id));
    await line.reached;
    const { result } = await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string }>();
    expect(result).toHaveLength(300);
    const deleted = api(`/api/v1/runs/${id}`, { method: "DELETE" });
    await waitFor(async () => (await r2Keys(`runs/default/${id}/`)).length === 0, "the output purged");
    line.open();
    expect((await deleted).status).toBe(204);
    await alarm;
    const deliveries = await deliveriesTo(t);
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0].body).toMatchObject({ event: "run.succeeded", job_id: id, status: "succeeded", result });
    expect(await storedTables(id)).toEqual([]);
  });

  it("a keyed submit cut short after making its job (its Worker stopped before the projection's entry): only the job of its repeat calls back", async () => {
    const t = token();
    const body = JSON.stringify({ prompt: "hooked", webhook_url: `${RECEIVER_URL}/hooks/ok/${t}`, config: { simulate: { steps: 1, step_ms: 1 } } });
    const submitWith = (bindings: Env) =>
      app.request("http://localhost/api/v1/runs", { method: "POST", headers: { "content-type": "application/json", "Idempotency-Key": t }, body }, bindings);
    // The projection's entry fails, and so does undoing the job: it runs, registered nowhere.
    const discardFails = failingStubs(env.RUNS, "discard", [1], "before");
    const admitFails = failingStubs(env.PROJECTIONS, "admit", [1], "before");
    expect((await submitWith(overlay(env, { RUNS: discardFails.proxy, PROJECTIONS: admitFails.proxy }))).status).toBe(500);
    const first = jobIdOf(discardFails.names[0]);
    const again = await submitWith(env);
    expect(again.status).toBe(202);
    const { job_id: second } = await again.json<{ job_id: string }>();

    // The first ends, reports, finds its key held by the second and goes, its webhook owed but never called.
    for (let i = 0; i < 20 && (await api(`/api/v1/runs/${first}`)).status === 200; i++) await settle(first);
    expect((await api(`/api/v1/runs/${first}`)).status).toBe(404);
    expect((await drive(second)).status).toBe("succeeded");
    await settleWebhook(second);
    expect((await deliveriesTo(t)).map((d) => [d.body.job_id, d.body.event])).toEqual([[second, "run.succeeded"]]);
  });

  it("a job without webhook_url shows no webhook", async () => {
    const id = await drive((await (await post("/api/v1/runs", { prompt: "x", config: { simulate: { steps: 1, step_ms: 1 } } })).json<{ job_id: string }>()).job_id);
    expect(id.webhook).toBeNull();
  });
});
