import { describe, expect, it } from "vitest";
import { getJob } from "../helpers";
import { enqueue, fireLine, release, statuses } from "./line";

describe("concurrency keys", () => {
  it("never run more than MAX_RUNNING_PER_KEY of one key, while other keys' jobs still start", async () => {
    const first = await enqueue({ concurrency_key: "user-1" });
    const second = await enqueue({ concurrency_key: "user-1" });
    const other = await enqueue({ concurrency_key: "user-2" });
    const plain = await enqueue();
    // One slot of three was free for user-1's second job, but its key was at its limit.
    expect([first.status, second.status, other.status, plain.status]).toEqual(["running", "queued", "running", "running"]);
    expect(await getJob(second.job_id)).toMatchObject({ concurrency_key: "user-1", queue_position: 1 });

    // A slot frees: user-1 is still at its limit, so the slot stays free for someone else...
    await release(plain.job_id);
    expect(await statuses([second.job_id])).toEqual(["queued"]);
    // ...such as a job of a third key, submitted later, which starts at once.
    const third = await enqueue({ concurrency_key: "user-3" });
    expect(third.status).toBe("running");

    // When user-1's running job ends, its waiting one starts.
    await release(first.job_id);
    expect(await statuses([second.job_id])).toEqual(["running"]);
    await fireLine();
    expect(await statuses([first.job_id, second.job_id, other.job_id, third.job_id])).toEqual(["cancelled", "running", "running", "running"]);
  });
});
