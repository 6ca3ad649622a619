import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, drive, JOB_ENDPOINTS, eventLog, getJob, r2Keys, runStub, storedTables, submit, waitFor } from "./helpers";

async function stepAttempts(id: string): Promise<number[]> {
  return runInDurableObject(runStub(id), (_i, state) =>
    state.storage.sql
      .exec<{ attempts: number }>("SELECT attempts FROM steps ORDER BY idx")
      .toArray()
      .map((r) => r.attempts),
  );
}

/**
 * Starts the step the next alarm runs, waits until its new attempt is recorded, then resets every
 * object. The job's row alone cannot say so: after an earlier eviction it still names the step
 * before the alarm has begun it again. The step must last longer than a loaded machine takes from
 * there to the reset: a step that ends first is not interrupted.
 */
async function evictDuringStep(id: string, step: string): Promise<void> {
  const index = Number(step.split("_")[1]) - 1;
  const attempts = (await stepAttempts(id))[index];
  const alarm = runDurableObjectAlarm(runStub(id)).catch(() => "aborted");
  await waitFor(async () => (await stepAttempts(id))[index] > attempts, `${step} to run`);
  // A read of the job is answered once the attempt's writes are stored (the object's output gate).
  expect((await getJob(id)).progress).toMatchObject({ current_step: step, steps_completed: index });
  await abortAllDurableObjects();
  await alarm;
}

describe("step-by-step execution", () => {
  it("runs one step per alarm, each checkpointed to storage and R2", async () => {
    const id = await submit({ steps: 3 });
    await runDurableObjectAlarm(runStub(id));
    let job = await getJob(id);
    expect(job.status).toBe("running");
    expect(job.progress).toMatchObject({ steps_completed: 1, steps_total: 3, percentage: 33 });
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([`runs/default/${id}/steps/0001`]);

    await runDurableObjectAlarm(runStub(id));
    await runDurableObjectAlarm(runStub(id));
    job = await getJob(id);
    expect(job.status).toBe("succeeded");
    expect(job.progress).toMatchObject({ steps_completed: 3, percentage: 100 });
    expect(await stepAttempts(id)).toEqual([1, 1, 1]);
  });

  it("produces the same output for the same prompt and knobs", async () => {
    const a = await submit({ steps: 2, output_bytes: 100_000 }, { prompt: "same" });
    const b = await submit({ steps: 2, output_bytes: 100_000 }, { prompt: "same" });
    const c = await submit({ steps: 2, output_bytes: 100_000 }, { prompt: "other" });
    await Promise.all([drive(a), drive(b), drive(c)]);
    const text = async (id: string) => (await api(`/api/v1/runs/${id}/output`)).text();
    expect(await text(a)).toBe(await text(b));
    expect(await text(a)).not.toBe(await text(c));
  });

  it("fails at fail_at_step with the runner's error, keeping earlier output", async () => {
    const id = await submit({ steps: 4, fail_at_step: 3 });
    const job = await drive(id);
    expect(job).toMatchObject({ status: "failed", error: "Simulated failure at step 3 of 4" });
    expect(job.progress.steps_completed).toBe(2);
    expect(job.completed_at).toBeTruthy();
    expect((await r2Keys(`runs/default/${id}/`)).length).toBe(2);
  });

  it("fails a job that runs past its timeout, aborting the step in flight", async () => {
    const id = await submit({ steps: 2, step_ms: 30_000 }, { timeout: 1 });
    const job = await drive(id);
    expect(job).toMatchObject({ status: "failed", error: "Job timed out after 1 seconds" });
    expect(job.progress.steps_completed).toBe(0);
    expect(Date.parse(job.completed_at!) - Date.parse(job.started_at!)).toBeLessThan(10_000);
  });

  it("an eviction mid-step resumes at that step and the job completes once", { timeout: 30_000 }, async () => {
    const id = await submit({ steps: 3, step_ms: 2_000 }, { prompt: "evict" });
    await runDurableObjectAlarm(runStub(id)); // step 1 finished
    await evictDuringStep(id, "step_2");

    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    expect(job.progress.steps_completed).toBe(3);
    expect(await stepAttempts(id)).toEqual([1, 2, 1]);
    const log = await eventLog(id);
    expect(log.filter((e) => e.event === "complete")).toHaveLength(1);
    expect(log.filter((e) => e.event === "output").map((e) => JSON.parse(e.data).data.delta)).toEqual([
      "Step 1/3 (step_1): simulated answer to: evict\n",
      "Step 2/3 (step_2): simulated answer to: evict\n",
      "Step 3/3 (step_3): simulated answer to: evict\n",
    ]);
    const result = await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string }>();
    expect(result.result).toBe(log.filter((e) => e.event === "output").map((e) => JSON.parse(e.data).data.delta).join(""));
  });

  it("state survives an eviction between steps", async () => {
    const id = await submit({ steps: 2 });
    await runDurableObjectAlarm(runStub(id));
    const before = await getJob(id);
    await abortAllDurableObjects();
    expect(await getJob(id)).toEqual(before);
    expect((await drive(id)).status).toBe("succeeded");
    expect(await stepAttempts(id)).toEqual([1, 1]);
  });

  it("a step interrupted again and again fails the job after a bounded number of attempts", { timeout: 30_000 }, async () => {
    const id = await submit({ steps: 2, step_ms: 2_000 });
    for (let i = 0; i < 3; i++) await evictDuringStep(id, "step_1");
    const job = await drive(id);
    expect(job).toMatchObject({ status: "failed", error: "Step step_1 failed after 3 attempts: it was interrupted" });
  });

  it("touching an unknown id writes nothing", async () => {
    const id = "run_neverSubmitted000000000000";
    for (const [method, path] of JOB_ENDPOINTS) {
      expect((await api(`/api/v1/runs/${id}${path}`, { method })).status).toBe(404);
    }
    expect(await storedTables(id)).toEqual([]);
    expect(await runDurableObjectAlarm(runStub(id))).toBe(false);
  });
});
