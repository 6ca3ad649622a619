import { describe, expect, it } from "vitest";
import { getJob, lineStub, runStub } from "../helpers";
import { alarmOf, enqueue, fireLine, LIMIT, lineCounts, release } from "./line";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("delays", () => {
  it("a delayed job starts not before its time, holding no slot and no alarm of its own meanwhile", async () => {
    const submittedAt = Date.now();
    const delayed = await enqueue({ delay_seconds: 1 });
    expect(delayed.status).toBe("queued");
    const job = await getJob(delayed.job_id);
    const scheduledFor = Date.parse(job.scheduled_for!);
    expect(scheduledFor).toBeGreaterThanOrEqual(submittedAt + 1000);
    expect(job.queue_position).toBeNull(); // not in line until its time
    expect(await lineCounts()).toMatchObject({ scheduled: 1, running: 0 });
    expect(await alarmOf(runStub(delayed.job_id))).toBeNull();
    expect(await alarmOf(lineStub())).not.toBeNull();

    // Slots are free, but its time has not come.
    await fireLine();
    expect((await getJob(delayed.job_id)).status).toBe("queued");

    await sleep(Math.max(0, scheduledFor - Date.now()) + 20);
    await fireLine();
    const started = await getJob(delayed.job_id);
    expect(started.status).toBe("running");
    expect(Date.parse(started.started_at!)).toBeGreaterThanOrEqual(scheduledFor);
    await release(delayed.job_id);
  });

  it("start_after in the future is the same as a delay; in the past, the job starts now", async () => {
    const at = new Date(Date.now() + 3600_000).toISOString();
    const later = await enqueue({ start_after: at });
    expect(later.status).toBe("queued");
    expect((await getJob(later.job_id)).scheduled_for).toBe(at);

    const past = await enqueue({ start_after: "2020-01-01T00:00:00Z" });
    expect(past.status).toBe("running");
    expect((await getJob(past.job_id)).scheduled_for).toBeNull();
    await release(past.job_id);
    await release(later.job_id);
  });

  it("start_after names one instant in each of ISO 8601's forms with an offset", async () => {
    const at = new Date(Math.ceil((Date.now() + 3600_000) / 60_000) * 60_000);
    const iso = at.toISOString(); // say 2026-11-30T17:45:00.000Z
    const [date, time] = [iso.slice(0, 10), iso.slice(11, 16)];
    const east = new Date(at.getTime() + 90 * 60_000).toISOString(); // the same instant at +01:30
    const forms = [
      iso,
      `${date}T${time}Z`,
      `${date}t${time}:00z`,
      `${date} ${time}:00+00:00`,
      `${east.slice(0, 10)}T${east.slice(11, 19)}+0130`,
      `${date}T${time}:00.000000-00:00`,
    ];
    for (const start_after of forms) {
      const job = await enqueue({ start_after });
      expect((await getJob(job.job_id)).scheduled_for, start_after).toBe(iso);
      await release(job.job_id);
    }
  });
});

describe("queue TTL", () => {
  it("a job not started within its TTL fails with the contract's error and frees its place", async () => {
    const holders = [];
    for (let i = 0; i < LIMIT; i++) holders.push((await enqueue({}, { steps: 3 })).job_id);
    const waiting = await enqueue({ queue_ttl_seconds: 1 });
    const patient = await enqueue();
    expect(waiting.status).toBe("queued");
    expect(await lineCounts()).toMatchObject({ waiting: 2 });

    await sleep(1050);
    await fireLine();
    const expired = await getJob(waiting.job_id);
    expect(expired).toMatchObject({ status: "failed", error: "Expired: not started within 1 s", started_at: null });
    expect(await lineCounts()).toMatchObject({ waiting: 1, expired: 0 });
    expect((await getJob(patient.job_id)).queue_position).toBe(1);

    // The next free slot goes to the job that waited on, not to the expired one.
    await release(holders[0]);
    expect((await getJob(patient.job_id)).status).toBe("running");
    expect((await getJob(waiting.job_id)).status).toBe("failed");
  });

  it("counts from the job's start time when it is delayed", { timeout: 30_000 }, async () => {
    // Every slot is taken (the test above): once its delay passes, the job waits in line.
    const job = await enqueue({ delay_seconds: 1, queue_ttl_seconds: 1 });
    await sleep(1050);
    await fireLine();
    // A second has passed since the submit, but not since it could start: it waits on.
    expect(await getJob(job.job_id)).toMatchObject({ status: "queued", error: null, queue_position: 1 });
    await sleep(1000);
    await fireLine();
    expect(await getJob(job.job_id)).toMatchObject({ status: "failed", error: "Expired: not started within 1 s" });
  });
});
