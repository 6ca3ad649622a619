import { describe, expect, it } from "vitest";
import { api, post } from "../helpers";
import { enqueue, LIMIT, QUEUED_LIMIT, release } from "./line";

const stats = async () => (await api("/stats")).json<{ total_jobs: number }>();

describe("the tenant's queued limit", () => {
  it("refuses a submit past it with 429 and Retry-After, storing nothing; a freed place takes one again", async () => {
    for (let i = 0; i < LIMIT; i++) expect((await enqueue()).status).toBe("running");
    const queued: string[] = [];
    // Delayed jobs count as queued as much as jobs waiting for a slot.
    for (let i = 0; i < QUEUED_LIMIT; i++) queued.push((await enqueue(i % 2 ? { delay_seconds: 3600 } : {})).job_id);
    const before = await stats();

    const refused = await post("/api/v1/runs", { prompt: "one too many", session_id: "over" });
    expect(refused.status).toBe(429);
    expect(await refused.json()).toEqual({ detail: `Too many queued jobs for this tenant (limit ${QUEUED_LIMIT})` });
    expect(Number(refused.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect(await stats()).toEqual(before);
    expect((await api("/api/v1/runs?session_id=over").then((r) => r.json<{ total: number }>())).total).toBe(0);

    await release(queued[0]);
    expect((await post("/api/v1/runs", { prompt: "fits again" })).status).toBe(202);
  });

  it("still replays an idempotent submit whose job exists, rather than refusing it", async () => {
    const { jobs } = await api("/api/v1/runs?status=queued&page_size=1").then((r) => r.json<{ jobs: { job_id: string }[] }>());
    await release(jobs[0].job_id);
    const body = { prompt: "keyed", config: { simulate: { step_ms: 1 } } };
    const first = await post("/api/v1/runs", body, { "Idempotency-Key": "at-the-limit" });
    expect(first.status).toBe(202);
    // Full again: a new job is refused, the keyed one is found.
    expect((await post("/api/v1/runs", body, { "Idempotency-Key": "another" })).status).toBe(429);
    const again = await post("/api/v1/runs", body, { "Idempotency-Key": "at-the-limit" });
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe((await first.json<{ job_id: string }>()).job_id);
  });
});
