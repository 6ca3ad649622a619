/** Usage on the simulated runner: estimated, like a provider that sends no counts, and held to a budget. */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Stats } from "../src/schemas";
import { failingStubs, restoreBindings, withBindings } from "./faults";
import { api, drive, eventLog, r2Keys, submit } from "./helpers";

describe("usage on the simulated runner", () => {
  it("estimates every step as characters / 4 of the prompt and of the output, and says so", async () => {
    const prompt = "count my tokens";
    const job = await drive(await submit({ steps: 2, output_bytes: 4096 }, { prompt }));
    const prompt_tokens = 2 * Math.ceil(prompt.length / 4);
    const completion_tokens = Math.ceil(2048 / 4) * 2;
    expect(job.usage).toEqual({ prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens, model_calls: 2, estimated: true });
  });

  it("config.max_total_tokens fails the job at the step that would pass it, writing nothing of that step", async () => {
    // Each step: 4 prompt tokens and 512 output tokens, so the second step passes 1,000.
    const job = await drive(await submit({ steps: 3, output_bytes: 3 * 2048 }, { prompt: "budget", config: { max_total_tokens: 1000, simulate: { steps: 3, step_ms: 1, output_bytes: 3 * 2048 } } }));
    expect(job).toMatchObject({ status: "failed", error: "Token budget of 1000 exceeded at step step_2" });
    expect(job.progress.steps_completed).toBe(1);
    expect(job.usage).toMatchObject({ model_calls: 2, total_tokens: 2 * (2 + 512) });
    expect(await r2Keys(`runs/default/${job.job_id}/`)).toEqual([`runs/default/${job.job_id}/steps/0001`]);
    const complete = (await eventLog(job.job_id)).find((e) => e.event === "complete")!;
    expect(JSON.parse(complete.data).data).toMatchObject({ status: "failed", usage: job.usage });
  });

  it("a job deleted before any snapshot carrying its usage reached the projection still counts it in the tenant's totals", async () => {
    const usage = async () => (await (await api("/stats")).json<Stats>()).usage;
    const before = await usage();
    const id = await submit({ steps: 2, output_bytes: 800 }, { prompt: "never reported" });
    await withBindings(id, { PROJECTIONS: failingStubs(env.PROJECTIONS, "upsert", [1, 2, 3, 4, 5, 6, 7, 8], "before").proxy });
    const job = await drive(id);
    expect(job.usage.prompt_tokens).toBeGreaterThan(0);
    expect(await usage()).toEqual(before);
    await restoreBindings(id);
    expect((await api(`/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
    const after = await usage();
    expect(after.prompt_tokens - before.prompt_tokens).toBe(job.usage.prompt_tokens);
    expect(after.completion_tokens - before.completion_tokens).toBe(job.usage.completion_tokens);
  });

  it("a budget that is not a positive integer → 422", async () => {
    for (const max_total_tokens of [0, -5, 1.5, "many"]) {
      const res = await api("/api/v1/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x", config: { max_total_tokens } }) });
      expect(res.status).toBe(422);
    }
  });
});
