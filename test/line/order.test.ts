import { describe, expect, it } from "vitest";
import { api, getJob, settle } from "../helpers";
import { enqueue, fireLine, LIMIT, lineCounts, release, statuses } from "./line";

describe("who starts next", () => {
  it("higher priority first, first in first out within a priority; queue_position says where each stands", async () => {
    const holders = [];
    for (let i = 0; i < LIMIT; i++) holders.push(await enqueue({}, { steps: 3 }));
    expect(holders.map((h) => h.status)).toEqual(Array(LIMIT).fill("running"));

    const a = await enqueue({ priority: 5 });
    const b = await enqueue({ priority: 9, tags: ["sparse"] });
    const c = await enqueue({ priority: 5 });
    const d = await enqueue({ priority: 9 });
    const e = await enqueue({ priority: 0, tags: ["sparse"] });
    const order = [b, d, a, c, e].map((j) => j.job_id);
    expect([a, b, c, d, e].map((j) => j.status)).toEqual(Array(5).fill("queued"));

    // Each job knows its place: on its own, and in the list.
    for (const [i, id] of order.entries()) expect((await getJob(id)).queue_position).toBe(i + 1);
    const listed = await api("/api/v1/runs?status=queued").then((r) => r.json<{ jobs: { job_id: string; queue_position: number }[] }>());
    expect(Object.fromEntries(listed.jobs.map((j) => [j.job_id, j.queue_position]))).toEqual(Object.fromEntries(order.map((id, i) => [id, i + 1])));
    expect((await getJob(holders[0].job_id)).queue_position).toBeNull();
    // A page without the jobs between its own still counts them: e stands behind d, of b's priority, and a and c, of one between.
    const sparse = await api("/api/v1/runs?status=queued&tag=sparse").then((r) => r.json<{ jobs: { job_id: string; queue_position: number }[] }>());
    expect(Object.fromEntries(sparse.jobs.map((j) => [j.job_id, j.queue_position]))).toEqual({ [b.job_id]: 1, [e.job_id]: 5 });

    // A later job cannot jump the line, however often the line's alarm runs.
    await fireLine();
    expect(await statuses(order)).toEqual(Array(5).fill("queued"));

    // Each freed slot goes to the next in order, and only to it.
    const started: string[] = [];
    const running = [...holders.map((h) => h.job_id)];
    for (const next of order) {
      await release(running.shift()!);
      const now = await statuses(order);
      const fresh = order.filter((id, i) => now[i] === "running" && !started.includes(id));
      expect(fresh).toEqual([next]);
      started.push(next);
      running.push(next);
      expect((await lineCounts()).running).toBe(LIMIT);
    }
    expect((await getJob(order[0])).queue_position).toBeNull();
  });

  it("a job that joins after the newest waiting job left goes after every job still waiting", async () => {
    // The slots the test before left held are freed first.
    const listed = await api("/api/v1/runs?page_size=100").then((r) => r.json<{ jobs: { job_id: string }[] }>());
    for (const { job_id } of listed.jobs) if ((await getJob(job_id)).status === "running") await release(job_id);
    expect((await lineCounts()).running).toBe(0);
    const holders = [];
    for (let i = 0; i < LIMIT; i++) holders.push((await enqueue({}, { steps: 3 })).job_id);
    expect(await statuses(holders)).toEqual(Array(LIMIT).fill("running"));

    const a = (await enqueue()).job_id;
    const b = (await enqueue()).job_id;
    // The newest place leaves; the places that join next are numbered after the newest held.
    expect((await api(`/api/v1/runs/${b}/cancel`, { method: "POST" })).status).toBe(200);
    await settle(b);
    expect((await lineCounts()).waiting).toBe(1);
    const c = (await enqueue()).job_id;
    const d = (await enqueue()).job_id;
    const order = [a, c, d];
    for (const [i, id] of order.entries()) expect((await getJob(id)).queue_position).toBe(i + 1);
    const started: string[] = [];
    for (const next of order) {
      await release(holders.shift()!);
      const now = await statuses(order);
      expect(order.filter((id, i) => now[i] === "running" && !started.includes(id))).toEqual([next]);
      started.push(next);
    }
  });
});
