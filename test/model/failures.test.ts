/**
 * The model runner against a provider that fails: refusals failed at once or tried again as OpenAI's
 * SDKs judge them, answers that are no completion, streams that break, stall, never end or report
 * an error, each named in the job's error and every request to the provider let go.
 */
import { describe, expect, it } from "vitest";
import { api, drive, eventLog, r2Keys, waitFor } from "../helpers";
import { THREE_TASKS, resultOf, submitModel, threeAnswers, topic, topicPerTest } from "./jobs";
import { CONTEXT_TOO_LONG, ENDLESS_ERROR_PAGE, requestsFor as seen } from "./protocol";

topicPerTest("failures");

describe("provider failures", () => {
  it("401: fails at once, naming the cause", async () => {
    const id = await submitModel({ config: { model: "bad-key" } });
    const job = await drive(id);
    expect(job.status).toBe("failed");
    expect(job.error).toBe("Model provider refused the credentials (401): Incorrect API key provided");
    expect(await seen(topic)).toHaveLength(1);
  });

  it.each([
    ["web-page", "Model endpoint answered a web page (text/html), not chat completions: MODEL_BASE_URL must be the API's base URL, up to and excluding /chat/completions"],
    ["not-a-completion", 'Model endpoint answered JSON that is not a chat completion: {"object":"list","data":[]}'],
  ])("a 200 that is no completion (%s): fails at once, naming what came back", async (model, error) => {
    const job = await drive(await submitModel({ config: { model } }));
    expect(job.status).toBe("failed");
    expect(job.error).toBe(error);
    expect(await seen(topic)).toHaveLength(1);
  });

  it("a stream held open after its end marker: the answer stands at [DONE], and the request is let go", async () => {
    const id = await submitModel({ config: { model: "done-then-held" } });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    expect(job.usage).toMatchObject({ model_calls: 2 });
    const requests = await seen(topic);
    expect(requests).toHaveLength(2);
    await waitFor(async () => (await seen(topic)).every((r) => r.closedEarly), "the server to see every connection closed");
  });

  it.each(["endless", "endless-whole"])("an answer that never ends (%s): stopped past 4 MiB of text, the job failed at once, nothing written", async (model) => {
    const id = await submitModel({ config: { model } });
    const job = await drive(id);
    expect(job.status).toBe("failed");
    expect(job.error).toBe("Model answer too large: more than 4194304 characters; the request was stopped");
    expect(await seen(topic)).toHaveLength(1);
    await waitFor(async () => (await seen(topic))[0].closedEarly, "the server to see the connection closed");
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    // The call is counted, its text estimated.
    expect(job.usage).toMatchObject({ model_calls: 1, estimated: true });
  }, 30_000);

  it("an endpoint that refuses stream_options is asked again without it, and from then on without it", async () => {
    const id = await submitModel({ agent_yaml: THREE_TASKS, config: { model: "no-stream-options" } });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    expect(await resultOf(id)).toBe(threeAnswers().join(""));
    // The refusal once, then each task without the parameter; the usage is estimated.
    expect((await seen(topic)).map((r) => r.body.stream_options !== undefined)).toEqual([true, false, false, false]);
    expect(job.usage).toMatchObject({ model_calls: 3, estimated: true });
  });

  it("a model that takes its limit only as max_completion_tokens is asked again so, and from then on so", async () => {
    const first = await submitModel({ agent_yaml: THREE_TASKS, config: { model: "reasoning", max_tokens: 500 } });
    expect((await drive(first)).status).toBe("succeeded");
    expect(await resultOf(first)).toBe(threeAnswers().join(""));
    // The refusal once, then every task with the same limit under the other name; the usage is the provider's.
    const limits = (await seen(topic)).map((r) => [r.body.max_tokens, r.body.max_completion_tokens]);
    expect(limits).toEqual([[500, undefined], [undefined, 500], [undefined, 500], [undefined, 500]]);
    expect((await seen(topic)).every((r) => r.body.stream_options?.include_usage === true)).toBe(true);
    expect((await api(`/api/v1/runs/${first}`).then((r) => r.json<{ usage: { estimated: boolean } }>())).usage.estimated).toBe(false);
    // A job without a limit is sent as it is.
    const second = await submitModel({ config: { model: "reasoning" } });
    expect((await drive(second)).status).toBe("succeeded");
    const last = (await seen(topic)).at(-1)!.body;
    expect([last.max_tokens, last.max_completion_tokens]).toEqual([undefined, undefined]);
  });

  it("an unknown model (404): fails at once", async () => {
    const job = await drive(await submitModel({ config: { model: "no-such-model" } }));
    expect(job.error).toBe("Model provider rejected the request (404): The model no-such-model does not exist");
  });

  it("a 503 that says x-should-retry: false: fails at once, as OpenAI's SDKs would", async () => {
    const job = await drive(await submitModel({ config: { model: "final-503" } }));
    expect(job.status).toBe("failed");
    expect(job.error).toBe("Model provider error (503): This deployment is being retired");
    expect(await seen(topic)).toHaveLength(1);
  });

  it("a refusal laid out over many lines: fails at once with the message it carries", async () => {
    const job = await drive(await submitModel({ config: { model: "long-error" } }));
    expect(job.error).toBe(`Model provider rejected the request (400): ${CONTEXT_TOO_LONG}`);
    expect(await seen(topic)).toHaveLength(1);
  });

  it("429 with Retry-After: waits that long, then succeeds", async () => {
    const id = await submitModel({ config: { model: "rate-limited-once" } });
    expect((await drive(id)).status).toBe("succeeded");
    const requests = await seen(topic);
    expect(requests).toHaveLength(3); // the 429, its retry, then the second task
    expect(requests[1].at - requests[0].at).toBeGreaterThanOrEqual(1000);
    const log = await eventLog(id);
    expect(log.some((e) => e.data.includes("Model provider rate limit (429): Rate limit reached"))).toBe(true);
  });

  it.each([
    ["unavailable-once", "a 503 with Retry-After", 1000, "Model provider error (503): The engine is currently overloaded"],
    ["rate-limited-ms-once", "a 429 with retry-after-ms", 1200, "Model provider rate limit (429): Rate limit reached"],
    ["request-timeout-once", "a 408, as OpenAI's SDKs retry it", 0, "Model provider error (408): Request timed out"],
    ["retry-400-once", "a 400 that says x-should-retry: true", 0, "Model provider rejected the request (400): Could not parse the request; please retry"],
  ])("%s (%s): tried again no sooner than it asks, then succeeds", async (model, _what, waitMs, cause) => {
    const id = await submitModel({ config: { model } });
    expect((await drive(id)).status).toBe("succeeded");
    const requests = await seen(topic);
    expect(requests).toHaveLength(3); // the refusal, its retry, then the second task
    expect(requests[1].at - requests[0].at).toBeGreaterThanOrEqual(waitMs);
    expect((await eventLog(id)).some((e) => e.data.includes(`Step research failed, will retry: ${cause}`))).toBe(true);
  });

  it("a 500 once: retried with backoff, then succeeds", async () => {
    const id = await submitModel({ config: { model: "server-error-once" } });
    expect((await drive(id)).status).toBe("succeeded");
  });

  it.each([
    ["server-error", "Model provider error (503): The server is overloaded"],
    ["malformed", "Model stream was malformed: {this is not json"],
    ["null-chunk", "Model stream was malformed: null"],
    ["stall", "Model stream stalled: no data for 1000 ms"],
    ["whole-error", 'Model answer reported an error: {"message":"Upstream provider timed out","code":502}'],
    ["error-mid-stream", 'Model stream reported an error: {"message":"Upstream overloaded","type":"server_error"}'],
    ["error-event", 'Model stream reported an error: {"message":"Overloaded"}'],
    ["whole-stall", "Model answer stalled: no data for 1000 ms"],
    ["odd-error", 'Model provider error (503): {"error":{"message":{"text":"busy"}}}'],
    // Only the start of an error answer is read: one that never ends does not hold the step.
    ["endless-error", `Model provider error (502): ${ENDLESS_ERROR_PAGE.slice(0, 300)}`],
    // An error answer is read for MODEL_IDLE_TIMEOUT_MS at most: one that stalls or trickles is named by what came.
    ["stalled-error", "Model provider error (503): upstream connect error or disconnect/reset before headers. reset reason: overflow"],
    ["trickle-error", "Model provider error (502): Bad gateway"],
  ])("%s every time: a bounded number of tries, then the job fails naming the cause, every request let go", async (model, cause) => {
    const id = await submitModel({ config: { model } });
    const job = await drive(id);
    expect(job.status).toBe("failed");
    expect(job.error).toBe(`Step research failed after 3 attempts: ${cause}`);
    expect(await seen(topic)).toHaveLength(3);
    // No connection is left open to the provider, also where it would go on sending.
    await waitFor(async () => (await seen(topic)).every((r) => r.closedEarly), "the server to see every connection closed");
  }, 30_000);

  it("a stream broken part-way: the step runs again, its text in the stream starting anew (first: true), as /output has it", async () => {
    const id = await submitModel({ config: { model: "broken-once" } });
    expect((await drive(id)).status).toBe("succeeded");
    const events = await eventLog(id);
    const outputs = events.filter((e) => e.event === "output").map((e) => JSON.parse(e.data).data as { delta: string; step: number; first: boolean });
    expect(outputs[0]).toEqual({ delta: expect.any(String), step: 1, first: true });
    expect(outputs.filter((o) => o.step === 1 && o.first)).toHaveLength(2);
    // The log names the cause as the runtime words it, not as the text of an Error object ("Error: …").
    const logs = events.filter((e) => e.event === "log").map((e) => JSON.parse(e.data).data as { message: string });
    expect(logs.map((l) => l.message)).toContainEqual(expect.stringMatching(/^Step research failed, will retry: Model stream broke: (?!Error)\w/));
    // A client that keeps each step's text, starting it anew at `first`, has the output; one that joins every delta does not.
    const steps: string[] = [];
    for (const o of outputs) steps[o.step] = (o.first ? "" : (steps[o.step] ?? "")) + o.delta;
    const output = await (await api(`/api/v1/runs/${id}/output`)).text();
    expect(steps.join("")).toBe(output);
    expect(outputs.map((o) => o.delta).join("")).not.toBe(output);
  });

  it("an answer sent whole that breaks part-way every time: fails naming the cause", async () => {
    const job = await drive(await submitModel({ config: { model: "whole-broken" } }));
    expect(job.status).toBe("failed");
    expect(job.error).toMatch(/^Step research failed after 3 attempts: Model answer broke: \w/);
  });

  it("a connection reset every time: fails naming the cause", async () => {
    const job = await drive(await submitModel({ config: { model: "reset" } }));
    expect(job.status).toBe("failed");
    expect(job.error).toMatch(/^Step research failed after 3 attempts: Model (provider unreachable|stream broke): /);
  });
});
