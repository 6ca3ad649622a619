/**
 * The line's alarm in an instance started by the alarm itself: the platform gives such an
 * instance no name (after an eviction, a restart, a deploy). The line keeps its tenant's name in
 * its storage; one from before it did gives the instance up until a call by name starts it again.
 */
import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, getJob, lineStub, settle } from "../helpers";
import { alarmOf, enqueue, LIMIT } from "./line";

/** The line's object reached by its id alone, as an alarm reaches it. */
const namelessLine = () => env.LINES.get(env.LINES.idFromString(lineStub().id.toString()));

/** A full line whose next job has just been granted the slot a cancel freed: the line's alarm must tell it. */
async function grantPending(): Promise<string> {
  const running = await Promise.all(Array.from({ length: LIMIT }, () => enqueue({}, { step_ms: 600_000 })));
  const waiting = await enqueue({}, { steps: 1 });
  expect(waiting.status).toBe("queued");
  await api(`/api/v1/runs/${running[0].job_id}/cancel`, { method: "POST" });
  await settle(running[0].job_id);
  for (const { job_id } of running.slice(1)) await api(`/api/v1/runs/${job_id}/cancel`, { method: "POST" });
  for (const { job_id } of running.slice(1)) await settle(job_id);
  return waiting.job_id;
}

describe("the line's alarm without the line's name", () => {
  it("uses the name the line kept", async () => {
    const waiting = await grantPending();
    await abortAllDurableObjects();
    expect(await runDurableObjectAlarm(namelessLine())).toBe(true);
    expect((await getJob(waiting)).status).toBe("running");
  });

  it("in a line from before it kept its name: gives the instance up, and the next call by name sets it right", async () => {
    const waiting = await grantPending();
    await runInDurableObject(lineStub(), (_instance, state) => state.storage.kv.delete("tenant"));
    await abortAllDurableObjects();

    // The alarm cannot tell the job: it puts itself off and gives the instance up.
    await runDurableObjectAlarm(namelessLine()).catch((error: Error) => expect(error.message).toMatch(/without its tenant's name/));
    expect((await getJob(waiting)).status).toBe("queued");
    expect(await alarmOf(lineStub())).not.toBeNull();

    // A call by name (here the poll's queue position) starts an instance that learns the name.
    await getJob(waiting);
    expect(await runInDurableObject(lineStub(), (_instance, state) => state.storage.kv.get("tenant"))).toBe("default");
    await abortAllDurableObjects();
    expect(await runDurableObjectAlarm(namelessLine())).toBe(true);
    expect((await getJob(waiting)).status).toBe("running");
  });
});
