import { describe, expect, it } from "vitest";
import { getJob, lineStub } from "../helpers";
import { alarmOf, ASKED_AFTER_MS, askSlotsGrantedAtJoin, enqueue, LIMIT, lineCounts } from "./line";

/** Every alarm rings this much after what is due (vitest.config.ts: ALARM_DELAY_MS). */
const LATE = 3_600_000;
/** While every slot is taken and jobs wait, slot holders are audited this often (TenantLine). */
const AUDIT_MS = 10 * 60_000;

const lineAlarm = () => alarmOf(lineStub());
const scheduledFor = async (id: string) => Date.parse((await getJob(id)).scheduled_for!);

/** Submits a job and returns its id with the times just before and after its submit. */
async function timed(fields: Record<string, unknown>) {
  const before = Date.now();
  const { job_id } = await enqueue(fields);
  return { id: job_id, before, after: Date.now() };
}

describe("the line's one alarm", () => {
  it("rings a minute after a slot is granted as its job joins, to ask the job whether it was made; once it said so, nothing more", async () => {
    const granted = await timed({});
    expect((await getJob(granted.id)).status).toBe("running");
    const alarm = await lineAlarm();
    expect(alarm).toBeGreaterThanOrEqual(granted.before + ASKED_AFTER_MS + LATE);
    expect(alarm).toBeLessThanOrEqual(granted.after + ASKED_AFTER_MS + LATE);
    await timed({}); // a second, granted later, changes nothing due sooner
    expect(await lineAlarm()).toBe(alarm);

    await askSlotsGrantedAtJoin();
    expect(await lineCounts()).toMatchObject({ running: 2 });
    expect(await lineAlarm()).toBeNull();
  });

  it("is set for an audit of the slots by the first job that waits while every slot is taken", async () => {
    for (let i = 2; i < LIMIT; i++) expect((await enqueue({}, { steps: 3 })).status).toBe("running");
    await askSlotsGrantedAtJoin();
    expect(await lineAlarm()).toBeNull(); // nothing is due: every holder has said it was made

    const first = await timed({});
    const alarm = await lineAlarm();
    expect(alarm).toBeGreaterThanOrEqual(first.before + AUDIT_MS + LATE);
    expect(alarm).toBeLessThanOrEqual(first.after + AUDIT_MS + LATE);

    await enqueue({}); // a second job that waits changes nothing due
    expect(await lineAlarm()).toBe(alarm);
  });

  it("is brought forward by a job due sooner than it rings, and left where it is by one due later", async () => {
    const audit = await lineAlarm();

    await enqueue({ delay_seconds: 7200 });
    expect(await lineAlarm()).toBe(audit);

    const soon = await enqueue({ delay_seconds: 300 });
    expect(await lineAlarm()).toBe((await scheduledFor(soon.job_id)) + LATE);

    await enqueue({ delay_seconds: 3600 });
    expect(await lineAlarm()).toBe((await scheduledFor(soon.job_id)) + LATE);
  });

  it("rings by the expiry of a job that waits with a queue TTL", async () => {
    const expiring = await timed({ queue_ttl_seconds: 30 });
    const alarm = await lineAlarm();
    expect(alarm).toBeGreaterThanOrEqual(expiring.before + 30_000 + LATE);
    expect(alarm).toBeLessThanOrEqual(expiring.after + 30_000 + LATE);

    await enqueue({ queue_ttl_seconds: 120 });
    await enqueue({ delay_seconds: 60, queue_ttl_seconds: 1 });
    expect(await lineAlarm()).toBe(alarm);
  });
});
