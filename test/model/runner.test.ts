import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { api, drive, driveTo, eventLog, getJob, post, r2Keys, runStub, waitFor } from "../helpers";
import type { ModelSettings } from "../../src/config";
import { openAiRunner } from "../../src/runners/openai/runner";
import type { AgentTask, StepOutput } from "../../src/runners/types";
import { answerFor, CONTEXT_TOO_LONG, ENDLESS_ERROR_PAGE, LLM_KEY, LLM_URL, requestsFor as seen } from "./protocol";

const THREE_TASKS = `
topic: unused
roles:
  researcher:
    role: Researcher of {topic}
    goal: Find facts about {topic}
    backstory: Careful and brief.
    tasks:
      gather:
        description: Gather facts about {topic}
        expected_output: Bullet points
      check:
        description: Check the facts
        expected_output: Corrections
  writer:
    role: Writer
    goal: Explain {topic}
    backstory: Plain words.
    tasks:
      write:
        description: Write the answer
        expected_output: Paragraphs
`;

let topicCounter = 0;
let topic: string;
beforeEach(() => {
  topic = `topic-${Date.now()}-${++topicCounter}`;
});

async function submitModel(body: Record<string, unknown> = {}): Promise<string> {
  const res = await post("/api/v1/runs", { prompt: topic, ...body });
  expect(res.status).toBe(202);
  return (await res.json<{ job_id: string }>()).job_id;
}

/** THREE_TASKS' task descriptions for this test's topic, in order, and the answers the local server gives them. */
const threeTasks = () => [`Gather facts about ${topic}`, "Check the facts", "Write the answer"];
const threeAnswers = () => threeTasks().map((task) => answerFor(task, topic));

const resultOf = async (id: string) => (await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string }>()).result;

const outputDeltas = async (id: string) =>
  (await eventLog(id)).filter((e) => e.event === "output").map((e) => JSON.parse(e.data).data.delta as string);

describe("the OpenAI-compatible runner", () => {
  it("reports itself in /health", async () => {
    expect(await (await api("/health")).json()).toEqual({ status: "healthy", runner: "openai-compatible", version: expect.any(String) });
  });

  it("runs a multi-task YAML agent in order, each task with its role, the topic and the earlier outputs", async () => {
    const id = await submitModel({ agent_yaml: THREE_TASKS });
    const queued = await getJob(id);
    expect(queued.agent_id).toBe("yaml:inline");
    expect(queued.progress.steps_total).toBe(3);

    await runDurableObjectAlarm(runStub(id));
    expect((await getJob(id)).progress).toMatchObject({ steps_completed: 1, current_step: "gather" });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");

    const requests = await seen(topic);
    expect(requests.map((r) => r.model)).toEqual(["echo", "echo", "echo"]);
    const [first, second, third] = requests.map((r) => r.body.messages);
    expect(first[0]).toEqual({ role: "system", content: `You are Researcher of ${topic}.\nYour goal: Find facts about ${topic}\nYour backstory: Careful and brief.` });
    expect(first[1].content).toBe(`Topic: ${topic}\n\nTask: Gather facts about ${topic}\n\nExpected output: Bullet points`);
    const a1 = answerFor(`Gather facts about ${topic}`, topic);
    const a2 = answerFor("Check the facts", topic);
    const a3 = answerFor("Write the answer", topic);
    expect(second[1].content).toContain(`Context from earlier tasks:\n\n### gather\n${a1}`);
    expect(third[0].content).toContain("You are Writer.");
    expect(third[1].content).toContain(`### gather\n${a1}\n\n### check\n${a2}`);

    expect(await resultOf(id)).toBe(a1 + a2 + a3);
    // Streamed deltas become output events, coalesced: fewer events than the 7-character chunks sent.
    const deltas = await outputDeltas(id);
    expect(deltas.join("")).toBe(a1 + a2 + a3);
    expect(deltas.length).toBeLessThan(Math.ceil(a1.length / 7) * 3);
  });

  it("an answer sent whole as JSON, not streamed, is the step's output, counted by the provider's usage", async () => {
    const id = await submitModel({ agent_yaml: THREE_TASKS, config: { model: "whole" } });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    const answers = threeAnswers();
    expect(await resultOf(id)).toBe(answers.join(""));
    // Each step's answer goes out as one output event, as the simulated runner's does.
    expect(await outputDeltas(id)).toEqual(answers);
    // The provider's counts (2 messages and one piece each), not estimates.
    expect(job.usage).toEqual({ prompt_tokens: 3 * 1002, completion_tokens: 3 * 3, total_tokens: 3 * 1005, model_calls: 3, estimated: false });
    expect(await seen(topic)).toHaveLength(3);
  });

  it("a stream written another way the event-stream format allows (CRLF or CR line ends, no space after a colon, data over two lines, comments), as a gateway may relay it, is read the same", async () => {
    const id = await submitModel({ agent_yaml: THREE_TASKS, config: { model: "relayed" } });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    expect(await resultOf(id)).toBe(threeAnswers().join(""));
    expect((await outputDeltas(id)).join("")).toBe(threeAnswers().join(""));
    // The provider's counts, read from the last block as relayed, not estimates.
    const completion = threeAnswers().reduce((n, answer) => n + 3 * Math.ceil(answer.length / 7), 0);
    expect(job.usage).toEqual({ prompt_tokens: 3 * 1002, completion_tokens: completion, total_tokens: 3 * 1002 + completion, model_calls: 3, estimated: false });
    expect(await seen(topic)).toHaveLength(3);
  });

  it.each([
    ["cut-short", "the model stopped at its token limit (finish_reason: length); the answer may be cut short"],
    ["filtered", "the provider's content filter stopped the answer (finish_reason: content_filter); it may be cut short"],
  ])("an answer the model ended early (%s) stands, and the log says so for its step", async (model, said) => {
    const id = await submitModel({ agent_yaml: THREE_TASKS, config: { model } });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    const messages = (await eventLog(id)).filter((e) => e.event === "log").map((e) => JSON.parse(e.data).data.message as string);
    expect(messages.filter((m) => m.endsWith(said))).toEqual(["gather", "check", "write"].map((step) => `Step ${step}: ${said}`));
  });

  it("an agent whose long role, stored with each of its tasks, would not fit its job → 413, and no model call", async () => {
    const agent = (tasks: number) =>
      `roles:\n  r:\n    role: R\n    goal: G\n    backstory: ${"b".repeat(700_000)}\n    tasks:\n` +
      Array.from({ length: tasks }, (_, i) => `      t${i}:\n        description: D${i}\n        expected_output: E\n`).join("");
    const res = await post("/api/v1/runs", { prompt: topic, agent_yaml: agent(3) });
    expect(res.status).toBe(413);
    expect((await res.json<{ detail: string }>()).detail).toMatch(/^Job too large: its prompt, agent and config come to more than the 2000000 bytes/);
    expect(await seen(topic)).toEqual([]);
    // Two such tasks fit.
    expect((await post("/api/v1/runs", { prompt: topic, agent_yaml: agent(2) })).status).toBe(202);
  });

  it("runs the bundled default agent when no definition is given", async () => {
    const id = await submitModel();
    expect((await getJob(id)).agent_id).toBe("file:agents.yaml");
    expect((await drive(id)).status).toBe("succeeded");
    expect((await seen(topic)).map((r) => r.body.messages[0].content.split("\n")[0])).toEqual(["You are Researcher.", "You are Writer."]);
  });

  it("runs a bundled recipe with the prompt as its input, its recipe_config over the job's config", async () => {
    const id = await submitModel({ recipe_name: "summarize", recipe_config: { temperature: 0.3 }, config: { temperature: 1.5, max_tokens: 99 } });
    expect((await getJob(id)).agent_id).toBe("recipe:summarize");
    expect((await drive(id)).status).toBe("succeeded");
    const requests = await seen(topic);
    expect(requests.map((r) => r.body.messages[0].content.split("\n")[0])).toEqual(["You are Careful reader.", "You are Editor."]);
    expect(requests[0].body.messages[1].content).toContain(`Read this text and list its key points, claims and figures, in its own order:\n\n${topic}`);
    for (const r of requests) expect(r.body).toMatchObject({ temperature: 0.3, max_tokens: 99 });
  });

  it("passes the job's model, temperature and max_tokens", async () => {
    const id = await submitModel({ config: { model: "echo", temperature: 0.2, max_tokens: 64 } });
    await drive(id);
    expect((await seen(topic))[0].body).toMatchObject({ model: "echo", temperature: 0.2, max_tokens: 64 });
  });

  it("cancel mid-stream closes the model request and no output arrives after the 200", async () => {
    const id = await submitModel({ config: { model: "slow" } });
    const alarm = runDurableObjectAlarm(runStub(id));
    // The job is still running, so its stream would not end: look at the stored log instead.
    const storedOutputs = () =>
      runInDurableObject(runStub(id), (_i, state) =>
        state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM events WHERE type = 'output'").one().n,
      );
    await waitFor(async () => (await storedOutputs()) > 0, "the first output event");

    const res = await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
    expect(res.status).toBe(200);
    const logAtCancel = await eventLog(id);
    await alarm;
    await waitFor(async () => (await seen(topic))[0]?.closedEarly, "the server to see the connection closed");
    expect(await eventLog(id)).toEqual(logAtCancel);
    expect((await getJob(id)).status).toBe("cancelled");
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect((await seen(topic))[0].finished).toBe(false);
  });

  it("a timeout aborts the model request and fails the job with a timed-out error", async () => {
    const id = await submitModel({ config: { model: "slow" }, timeout: 1 });
    const job = await drive(id);
    expect(job).toMatchObject({ status: "failed", error: "Job timed out after 1 seconds" });
    await waitFor(async () => (await seen(topic))[0]?.closedEarly, "the server to see the connection closed");
  });

  it("an eviction between steps resumes without sending a finished step again", async () => {
    const id = await submitModel({ agent_yaml: THREE_TASKS });
    await runDurableObjectAlarm(runStub(id));
    await abortAllDurableObjects();
    expect((await drive(id)).status).toBe("succeeded");
    const tasks = (await seen(topic)).map((r) => /^Task: (.*)$/m.exec(r.body.messages[1].content)![1]);
    expect(tasks).toEqual(threeTasks());
  });
});

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

describe("the OpenAI-compatible runner with human input", () => {
  const REVIEWED = THREE_TASKS.replace("expected_output: Corrections", "expected_output: Corrections\n        human_input: true");

  it("asks after a human_input task; revise sends the earlier answer and the feedback; approve's note reaches the next task", async () => {
    const id = await submitModel({ agent_yaml: REVIEWED });
    const asked = await driveTo(id, "awaiting_input");
    expect(asked.input_request).toMatchObject({ step: "check", output: answerFor("Check the facts", topic) });

    expect((await post(`/api/v1/runs/${id}/input`, { action: "revise", input: "cite sources" })).status).toBe(200);
    const again = await driveTo(id, "awaiting_input");
    expect(again.input_request!.step).toBe("check");
    expect((await post(`/api/v1/runs/${id}/input`, { action: "approve", input: "keep it short" })).status).toBe(200);
    expect((await drive(id)).status).toBe("succeeded");

    const requests = (await seen(topic)).map((r) => r.body.messages);
    expect(requests).toHaveLength(4); // gather, check, check again, write
    const revised = requests[2];
    expect(revised.slice(2)).toEqual([
      { role: "assistant", content: answerFor("Check the facts", topic) },
      { role: "user", content: "A person reviewed your answer and asks for a revision: cite sources\n\nAnswer the task again." },
    ]);
    expect(requests[3][1].content).toContain(`### check\n${answerFor("Check the facts", topic)}\n\nA person's note on it: keep it short`);
  });
});

describe("the model endpoint's URL and key, as the settings give them", () => {
  const task: AgentTask = { name: "answer", role: "Helper", goal: "Help", backstory: "Brief.", description: "Answer plainly", expected_output: "One line" };
  const runWith = (settings: Partial<ModelSettings>) =>
    openAiRunner({ baseUrl: `${LLM_URL}/v1`, apiKey: LLM_KEY, apiKeyHeader: null, model: "echo", idleTimeoutMs: 1000, ...settings }).runStep({
      prompt: topic,
      index: 1,
      total: 1,
      task: task.name,
      agentTask: task,
      config: {},
      signal: new AbortController().signal,
    });
  const textOf = (output: StepOutput) => new Response(output.body).text();

  it("an Azure OpenAI deployment: the base URL's api-version is kept, and the key goes in the header named", async () => {
    const output = await runWith({ baseUrl: `${LLM_URL}/openai/deployments/team-gpt?api-version=2024-10-21`, apiKeyHeader: "api-key" });
    expect(await textOf(output)).toBe(answerFor("Answer plainly", topic));
    expect((await seen(topic)).map((r) => r.url)).toEqual(["/openai/deployments/team-gpt/chat/completions?api-version=2024-10-21"]);
  });

  it("the same deployment with the key as a Bearer token is refused, naming the cause", async () => {
    const refused = runWith({ baseUrl: `${LLM_URL}/openai/deployments/team-gpt?api-version=2024-10-21` });
    await expect(refused).rejects.toThrow("Model provider refused the credentials (401): Incorrect API key provided");
  });

  it.each(["/v1/", "/v1/chat/completions", "/v1/chat/completions/"])("a base URL given as %s reaches /v1/chat/completions", async (path) => {
    expect(await textOf(await runWith({ baseUrl: `${LLM_URL}${path}` }))).toBe(answerFor("Answer plainly", topic));
    expect((await seen(topic)).map((r) => r.url)).toEqual(["/v1/chat/completions"]);
  });
});
