/**
 * Cancel, delete and a step's completion racing on one job. A gate holds the step at its R2
 * write, so each order is played out exactly, and the invariants are checked after each.
 */
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { gatedBucket, withBindings } from "./faults";
import { api, eventLog, getJob, r2Keys, runStub, storedTables, submit, waitFor } from "./helpers";

/** Waits until the cancel has been recorded; it then waits for the held step before answering. */
const cancelLanded = (id: string) => waitFor(async () => (await getJob(id)).status === "cancelled", "the cancel to land");

const cancel = (id: string) => api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
const del = (id: string, force = false) => api(`/api/v1/runs/${id}${force ? "?force=true" : ""}`, { method: "DELETE" });

/** A job whose first step has run and now waits at its R2 write until `open()`. */
async function heldJob() {
  const id = await submit({ steps: 1, step_ms: 1 });
  const gate = gatedBucket(env.OUTPUTS);
  await withBindings(id, { OUTPUTS: gate.proxy });
  const alarm = runDurableObjectAlarm(runStub(id));
  await gate.reached;
  return { id, open: gate.open, alarm };
}

async function expectGone(id: string) {
  expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
  expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
  expect(await storedTables(id)).toEqual([]);
  const list = await env.PROJECTIONS.getByName("default").list({ page: 1, page_size: 100 });
  expect(list.jobs.map((j) => j.job_id)).not.toContain(id);
}

/** Cancels while the step is held, then lets the step finish: the cancel wins, once. */
async function cancelWhileHeld(job: Awaited<ReturnType<typeof heldJob>>) {
  const cancelled = cancel(job.id);
  await cancelLanded(job.id);
  job.open();
  expect((await cancelled).status).toBe(200);
  await job.alarm;
  await expectOneEnd(job.id, "cancelled");
}

async function expectOneEnd(id: string, status: string) {
  const completes = (await eventLog(id)).filter((e) => e.event === "complete");
  expect(completes).toHaveLength(1);
  expect(JSON.parse(completes[0].data).data.status).toBe(status);
}

describe("cancel, delete and completion in every order", () => {
  it("completion, then cancel, then delete", async () => {
    const { id, open, alarm } = await heldJob();
    open();
    await alarm;
    await expectOneEnd(id, "succeeded");
    expect((await cancel(id)).status).toBe(400);
    expect((await del(id)).status).toBe(204);
    await expectGone(id);
  });

  it("cancel while the step is finishing, then completion, then delete", async () => {
    const held = await heldJob();
    const { id } = held;
    await cancelWhileHeld(held);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]); // the step's late write was removed
    expect((await getJob(id)).progress.steps_completed).toBe(0);
    expect((await del(id)).status).toBe(204);
    await expectGone(id);
  });

  it("delete (refused), cancel, completion, delete", async () => {
    const held = await heldJob();
    const { id } = held;
    expect((await del(id)).status).toBe(400);
    await cancelWhileHeld(held);
    expect((await del(id)).status).toBe(204);
    await expectGone(id);
  });

  it("forced delete while the step is finishing, then completion", async () => {
    const { id, open, alarm } = await heldJob();
    const deleted = del(id, true);
    open();
    expect((await deleted).status).toBe(204);
    await alarm;
    await expectGone(id);
  });

  it("cancel and forced delete at once, then completion", async () => {
    const { id, open, alarm } = await heldJob();
    const both = Promise.all([cancel(id), del(id, true)]);
    await waitFor(async () => (await api(`/api/v1/runs/${id}`)).status === 404, "the delete to land");
    open();
    const [c, d] = await both;
    expect([200, 400, 404]).toContain(c.status);
    expect(d.status).toBe(204);
    await alarm;
    await expectGone(id);
  });

  it("forced delete and cancel at once, the other way round", async () => {
    const { id, open, alarm } = await heldJob();
    const both = Promise.all([del(id, true), cancel(id)]);
    open();
    const [d, c] = await both;
    expect(d.status).toBe(204);
    expect([200, 400, 404]).toContain(c.status);
    await alarm;
    await expectGone(id);
  });

  it("completion and a forced delete at once", async () => {
    const { id, open, alarm } = await heldJob();
    open();
    const [d] = await Promise.all([del(id, true), alarm]);
    expect(d.status).toBe(204);
    await expectGone(id);
  });
});
