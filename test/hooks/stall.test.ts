import { describe, expect, it } from "vitest";
import { drive, eventLog, post } from "../helpers";

describe("stalled steps (STALL_TIMEOUT_MS = 1500 here)", () => {
  it("a step that reports nothing for too long is stopped, retried, and the job fails clearly", async () => {
    const res = await post("/api/v1/runs", { prompt: "stuck", config: { simulate: { steps: 1, step_ms: 60_000 } } });
    const { job_id } = await res.json<{ job_id: string }>();
    const job = await drive(job_id);
    expect(job.status).toBe("failed");
    expect(job.error).toBe("Step step_1 failed after 3 attempts: Step step_1 made no progress for 1500 ms");
    const retries = (await eventLog(job_id)).filter((e) => e.data.includes("will retry"));
    expect(retries).toHaveLength(2);
  }, 20_000);
});
