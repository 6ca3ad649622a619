import { runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, eventLog, finished, getJob, r2Keys, runStub, submit, submitQueued, waitFor } from "./helpers";

const cancel = (id: string) => api(`/api/v1/runs/${id}/cancel`, { method: "POST" });

describe("POST /api/v1/runs/{id}/cancel", () => {
  it("cancels a queued job at once; it never starts", async () => {
    const id = await submitQueued();
    const res = await cancel(id);
    expect(res.status).toBe(200);
    const job = await res.json<Record<string, unknown>>();
    expect(job).toMatchObject({ job_id: id, status: "cancelled", started_at: null, retry_after: null });
    expect(job.cancelled_at).toBeTruthy();
    expect(job.completed_at).toBe(job.cancelled_at);

    await runDurableObjectAlarm(runStub(id));
    const after = await getJob(id);
    expect(after.status).toBe("cancelled");
    expect(after.started_at).toBeNull();
    const log = await eventLog(id);
    expect(log.some((e) => e.data.includes("Job started"))).toBe(false);
  });

  it("cancels a running job mid-step: nothing is written after the 200", async () => {
    const id = await submit({ steps: 3, step_ms: 400 });
    const alarm = runDurableObjectAlarm(runStub(id));
    await waitFor(async () => (await getJob(id)).progress.current_step === "step_1", "step 1 to run");

    const res = await cancel(id);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "cancelled", progress: { steps_completed: 0 } });
    const logAtCancel = await eventLog(id);
    const jobAtCancel = await getJob(id);

    await alarm; // the aborted step has returned
    expect(await eventLog(id)).toEqual(logAtCancel);
    expect(await getJob(id)).toEqual(jobAtCancel);
    expect(logAtCancel.filter((e) => e.event === "output")).toEqual([]);
    const usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, model_calls: 0, estimated: false };
    expect(logAtCancel.at(-2)).toMatchObject({ event: "complete", data: JSON.stringify({ event: "complete", data: { status: "cancelled", job_id: id, usage } }) });
    expect(logAtCancel.at(-1)).toEqual({ id: null, event: null, data: "[DONE]" });
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect((await api(`/api/v1/runs/${id}/output`)).status).toBe(404);
  });

  it("keeps the output of steps finished before the cancel", async () => {
    const id = await submit({ steps: 3, step_ms: 300 }, { prompt: "keep" });
    await runDurableObjectAlarm(runStub(id)); // step 1 done
    const alarm = runDurableObjectAlarm(runStub(id));
    await waitFor(async () => (await getJob(id)).progress.current_step === "step_2", "step 2 to run");
    expect((await cancel(id)).status).toBe(200);
    await alarm;
    const output = await api(`/api/v1/runs/${id}/output`);
    expect(output.headers.get("X-Run-Status")).toBe("cancelled");
    expect(await output.text()).toBe("Step 1/3 (step_1): simulated answer to: keep\n");
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([`runs/default/${id}/steps/0001`]);
  });

  it.each([
    ["succeeded", {}],
    ["failed", { fail_at_step: 1 }],
  ])("a %s job → 400 Cannot cancel", async (status, simulate) => {
    const id = await finished({ steps: 1, ...simulate });
    const res = await cancel(id);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: `Cannot cancel job with status: ${status}` });
  });

  it("a cancelled job → 400, and it stays cancelled once", async () => {
    const id = await submit();
    await cancel(id);
    const again = await cancel(id);
    expect(again.status).toBe(400);
    expect(await again.json()).toEqual({ detail: "Cannot cancel job with status: cancelled" });
    expect((await eventLog(id)).filter((e) => e.event === "complete")).toHaveLength(1);
  });

  it("unknown → 404", async () => {
    const res = await cancel("run_unknown123");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Job not found: run_unknown123" });
  });
});
