/** Token usage from the provider's streamed counts (or estimates where it sends none), budgets, and the tenant's totals. */
import { beforeEach, describe, expect, it } from "vitest";
import { api, drive, eventLog, post, r2Keys } from "../helpers";
import type { Job, Stats } from "../../src/schemas";
import { answerFor, requestsFor as seen, usageFor, type RecordedRequest } from "./protocol";

const TWO_TASKS = `
roles:
  analyst:
    role: Analyst
    goal: Study {topic}
    backstory: Terse.
    tasks:
      study:
        description: Study {topic}
        expected_output: Notes
      sum_up:
        description: Sum up
        expected_output: One line
`;

let topic: string;
let counter = 0;
beforeEach(() => {
  topic = `usage-${Date.now()}-${++counter}`;
});

async function run(config: Record<string, unknown>, agent = TWO_TASKS): Promise<Job> {
  const res = await post("/api/v1/runs", { prompt: topic, agent_yaml: agent, config });
  expect(res.status).toBe(202);
  return drive((await res.json<{ job_id: string }>()).job_id);
}

const pieces = (text: string, size: number) => Math.ceil(text.length / size);
const chars = (r: RecordedRequest) => r.body.messages.reduce((n, m) => n + m.content.length, 0);
const stats = async () => (await api("/stats")).json<Stats>();

describe("usage", () => {
  it("asks for usage in the stream and counts the provider's numbers exactly, per call", async () => {
    const job = await run({ model: "echo" });
    expect(job.status).toBe("succeeded");
    const requests = await seen(topic);
    expect(requests.map((r) => r.body.stream_options)).toEqual([{ include_usage: true }, { include_usage: true }]);
    const calls = [answerFor(`Study ${topic}`, topic), answerFor("Sum up", topic)].map((answer, i) => usageFor(requests[i].body.messages.length, pieces(answer, 7)));
    const prompt = calls[0].prompt_tokens + calls[1].prompt_tokens;
    const completion = calls[0].completion_tokens + calls[1].completion_tokens;
    expect(job.usage).toEqual({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, model_calls: 2, estimated: false });
    const complete = (await eventLog(job.job_id)).find((e) => e.event === "complete")!;
    expect(JSON.parse(complete.data).data.usage).toEqual(job.usage);
  });

  it("estimates characters / 4 where the provider sends no usage, and says so", async () => {
    const job = await run({ model: "no-usage" });
    expect(job.status).toBe("succeeded");
    const requests = await seen(topic);
    const answers = [answerFor(`Study ${topic}`, topic), answerFor("Sum up", topic)];
    const prompt = requests.reduce((n, r) => n + Math.ceil(chars(r) / 4), 0);
    const completion = answers.reduce((n, a) => n + Math.ceil(a.length / 4), 0);
    expect(job.usage).toEqual({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, model_calls: 2, estimated: true });
  });

  it("a budget stops the job mid-stream: the request is hung up, nothing is written after", async () => {
    const budget = 400;
    const res = await post("/api/v1/runs", { prompt: topic, agent_yaml: TWO_TASKS, config: { model: "verbose", max_total_tokens: budget } });
    const { job_id } = await res.json<{ job_id: string }>();
    const job = await drive(job_id);
    expect(job).toMatchObject({ status: "failed", error: `Token budget of ${budget} exceeded at step study` });
    const [request, ...more] = await seen(topic);
    expect(more).toEqual([]); // the second task never ran
    expect(request.finished).toBe(false);
    expect(request.closedEarly).toBe(true);
    const full = pieces(answerFor(`Study ${topic}`, topic).repeat(100), 20);
    expect(request.piecesSent).toBeLessThan(full);
    // What it used up to the hang-up is counted, as an estimate.
    expect(job.usage.estimated).toBe(true);
    expect(job.usage.model_calls).toBe(1);
    expect(job.usage.total_tokens).toBeGreaterThan(budget);
    expect(job.usage.total_tokens).toBeLessThan(budget + 20);
    expect(await r2Keys(`runs/default/${job_id}/`)).toEqual([]);
    const streamed = (await eventLog(job_id)).filter((e) => e.event === "output").map((e) => JSON.parse(e.data).data.delta as string).join("");
    expect(Math.ceil(chars(request) / 4) + Math.ceil(streamed.length / 4)).toBeLessThanOrEqual(budget);
  });

  it("a budget the provider's exact count passes at the end fails the job too, with no output", async () => {
    // The estimate stays under 1,100 tokens; the provider's count (over 1,000 for the prompt alone, see usageFor) does not.
    const job = await run({ model: "echo", max_total_tokens: 1_010 });
    expect(job).toMatchObject({ status: "failed", error: "Token budget of 1010 exceeded at step study" });
    expect(job.usage).toMatchObject({ model_calls: 1, estimated: false });
    expect(await r2Keys(`runs/default/${job.job_id}/`)).toEqual([]);
  });

  it("/stats totals equal the sum over the jobs, also after the jobs are deleted", async () => {
    const before = await stats();
    const jobs = [await run({ model: "echo" }), await run({ model: "no-usage" }), await run({ model: "verbose", max_total_tokens: 300 })];
    const sum = (key: "prompt_tokens" | "completion_tokens" | "total_tokens" | "model_calls") => jobs.reduce((n, j) => n + j.usage[key], 0);
    const expected = {
      prompt_tokens: before.usage.prompt_tokens + sum("prompt_tokens"),
      completion_tokens: before.usage.completion_tokens + sum("completion_tokens"),
      total_tokens: before.usage.total_tokens + sum("total_tokens"),
      model_calls: before.usage.model_calls + sum("model_calls"),
    };
    const after = await stats();
    expect(after.usage).toEqual(expected);
    const today = new Date().toISOString().slice(0, 10);
    expect(after.usage_by_day).toHaveLength(31);
    expect(after.usage_by_day.at(-1)!.day).toBe(today);
    expect(after.usage_by_day.at(-1)!.total_tokens - before.usage_by_day.at(-1)!.total_tokens).toBe(sum("total_tokens"));

    for (const job of jobs) expect((await api(`/api/v1/runs/${job.job_id}`, { method: "DELETE" })).status).toBe(204);
    const gone = await stats();
    expect(gone.usage).toEqual(expected);
    expect(gone.total_jobs).toBe(before.total_jobs);
  });
});
