/** Jobs awaiting a person hold no run slot; answered, they wait for one ahead of jobs not yet started. */
import { runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { driveTo, getJob, post, runStub } from "../helpers";
import { enqueue, LIMIT, lineCounts, release, statuses } from "./line";

describe("the line and jobs awaiting input", () => {
  it(`${LIMIT + 2} jobs awaiting input leave every slot to ${LIMIT} others; answered, they go first`, async () => {
    const asking: string[] = [];
    for (let i = 0; i < LIMIT + 2; i++) asking.push((await enqueue({}, { steps: 2, input_at_step: 1 })).job_id);
    // Only the first LIMIT run at first; each that asks frees its slot for the next.
    for (const id of asking) await driveTo(id, "awaiting_input");
    expect(await statuses(asking)).toEqual(asking.map(() => "awaiting_input"));
    expect(await lineCounts()).toMatchObject({ running: 0, waiting: 0 });

    const others: string[] = [];
    for (let i = 0; i < LIMIT; i++) others.push((await enqueue({}, { steps: 1 })).job_id);
    expect(await statuses(others)).toEqual(others.map(() => "running"));
    const later = (await enqueue({}, { steps: 1 })).job_id;
    expect((await getJob(later)).status).toBe("queued");

    // Answered while the line is full: queued, ahead of the job that has not started yet.
    for (const id of asking) expect((await post(`/api/v1/runs/${id}/input`, { action: "approve" })).status).toBe(200);
    for (const id of asking) await runDurableObjectAlarm(runStub(id)); // each tells the line it waits again
    expect(await statuses(asking)).toEqual(asking.map(() => "queued"));
    expect((await getJob(later)).queue_position).toBe(LIMIT + 3);
    const positions = await Promise.all(asking.map(async (id) => (await getJob(id)).queue_position));
    expect([...positions].sort()).toEqual([1, 2, 3, 4, 5]);

    await release(others[0]);
    const first = asking[positions.indexOf(1)];
    expect((await getJob(first)).status).toBe("running");
    expect((await getJob(later)).status).toBe("queued");
  });
});
