import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, drive, driveTo, eventLog, getJob, post, r2Keys, runStub, waitFor } from "../helpers";
import type { ModelSettings } from "../../src/config";
import { openAiRunner } from "../../src/runners/openai/runner";
import type { AgentTask, StepOutput } from "../../src/runners/types";
import { answerFor, LLM_KEY, LLM_URL, requestsFor as seen } from "./protocol";
import { THREE_TASKS, resultOf, submitModel, threeAnswers, threeTasks, topic, topicPerTest } from "./jobs";

topicPerTest("runner");

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
