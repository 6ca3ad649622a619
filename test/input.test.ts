/**
 * Human input: a step that asks a person stops the job (`awaiting_input`, no run slot, its
 * timeout's clock stopped) until the person approves, revises or rejects its answer, or until
 * `input_timeout_s` passes.
 */
import { abortAllDurableObjects, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, drive, driveTo, eventLog, getJob, post, r2Keys, runStub, storedTables, submit, type Simulate } from "./helpers";
import type { Job } from "../src/schemas";

const answer = (id: string, body: unknown) => post(`/api/v1/runs/${id}/input`, body);

/** A 3-step job that asks for input after step 2, driven until it asks. */
async function awaiting(simulate: Simulate & { input_at_step?: number } = {}, extra: Record<string, unknown> = {}) {
  const id = await submit({ steps: 3, input_at_step: 2, ...simulate } as Simulate, { prompt: "review me", ...extra });
  const job = await driveTo(id, "awaiting_input");
  return { id, job };
}

describe("a job that asks for input", () => {
  it("stops after the step with its answer, the request on the job and the stream", async () => {
    const { id, job } = await awaiting();
    expect(job).toMatchObject({ status: "awaiting_input", retry_after: 2, completed_at: null, progress: { steps_completed: 2, current_step: "step_2" } });
    expect(job.input_request).toMatchObject({
      step: "step_2",
      output: "Step 2/3 (step_2): simulated answer to: review me\n",
    });
    expect(job.input_request!.prompt).toContain("step_2");
    expect(Date.parse(job.input_request!.expires_at) - Date.parse(job.input_request!.requested_at)).toBe(86_400_000);

    // The stream stays open while the job waits: read what it has sent so far.
    const res = await api(`/api/v1/runs/${id}/stream`);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("input_required")) text += (await reader.read()).value;
    await reader.cancel();
    expect(text).toContain(`event: input_required\ndata: {"event":"input_required","data":${JSON.stringify(job.input_request)}}`);

    // Nothing more runs while it waits, however often its alarm fires.
    await runDurableObjectAlarm(runStub(id));
    expect(await getJob(id)).toEqual(job);
    expect(await r2Keys(`runs/default/${id}/`)).toHaveLength(2);
    const result = await api(`/api/v1/runs/${id}/result`);
    expect(result.status).toBe(400);
    expect(await result.json()).toEqual({ detail: "Job is still awaiting_input. Current status: awaiting_input" });
  });

  it("approve: the answer stands and the job runs on to the end", async () => {
    const { id } = await awaiting();
    const res = await answer(id, { action: "approve", input: "looks right" });
    expect(res.status).toBe(200);
    const after = await res.json<Job>();
    expect(["queued", "running"]).toContain(after.status);
    expect(after.input_request).toBeNull();
    const done = await drive(id);
    expect(done.status).toBe("succeeded");
    const output = await (await api(`/api/v1/runs/${id}/output`)).text();
    expect(output).toBe([1, 2, 3].map((n) => `Step ${n}/3 (step_${n}): simulated answer to: review me\n`).join(""));
    const log = (await eventLog(id)).map((e) => e.data);
    expect(log.filter((d) => d.includes('"input_required"'))).toHaveLength(1);
    expect(log.some((d) => d.includes("Input approved at step step_2"))).toBe(true);
    expect(log.some((d) => d.includes("Job resumed"))).toBe(true);
  });

  it("revise, twice: the step runs again with the feedback and asks again; then approve", async () => {
    const { id } = await awaiting();
    expect((await answer(id, { action: "revise", input: "shorter" })).status).toBe(200);
    const second = await driveTo(id, "awaiting_input");
    expect(second.input_request!.output).toBe("Step 2/3 (step_2): simulated answer to: review me (revised after: shorter)\n");
    expect(second.progress.steps_completed).toBe(2);
    expect((await answer(id, { action: "revise", input: "in French" })).status).toBe(200);
    const third = await driveTo(id, "awaiting_input");
    expect(third.input_request!.output).toContain("(revised after: in French)");
    expect((await answer(id, { action: "approve" })).status).toBe(200);
    expect((await drive(id)).status).toBe("succeeded");
    const output = await (await api(`/api/v1/runs/${id}/output`)).text();
    expect(output.split("\n")[1]).toBe("Step 2/3 (step_2): simulated answer to: review me (revised after: in French)");
    const log = await eventLog(id);
    expect(log.filter((e) => e.event === "input_required")).toHaveLength(3);
    // Each answer of step 2 starts its text in the stream anew: kept step by step, the stream's text is the output.
    const outputs = log.filter((e) => e.event === "output").map((e) => JSON.parse(e.data).data as { delta: string; step: number; first: boolean });
    expect(outputs.map((o) => [o.step, o.first])).toEqual([[1, true], [2, true], [2, true], [2, true], [3, true]]);
    const steps: string[] = [];
    for (const o of outputs) steps[o.step] = (o.first ? "" : steps[o.step]) + o.delta;
    expect(steps.join("")).toBe(output);
  });

  it("a download of the output resumed across a revision gets the revised output whole (If-Range)", async () => {
    const { id } = await awaiting();
    const first = await api(`/api/v1/runs/${id}/output`, { headers: { Range: "bytes=0-49" } });
    expect(first.status).toBe(206);
    const etag = first.headers.get("ETag")!;
    await first.text();
    expect((await answer(id, { action: "revise", input: "shorter" })).status).toBe(200);
    await driveTo(id, "awaiting_input");
    const resumed = await api(`/api/v1/runs/${id}/output`, { headers: { Range: "bytes=50-", "If-Range": etag } });
    expect(resumed.status).toBe(200);
    expect(resumed.headers.get("ETag")).not.toBe(etag);
    expect(await resumed.text()).toBe(
      "Step 1/3 (step_1): simulated answer to: review me\nStep 2/3 (step_2): simulated answer to: review me (revised after: shorter)\n",
    );
  });

  it("reject: the job fails with the person's reason", async () => {
    const { id } = await awaiting();
    const res = await answer(id, { action: "reject", input: "off topic" });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "failed", error: "Rejected at step step_2: off topic", input_request: null });
    const log = await eventLog(id);
    expect(log.at(-2)!.data).toContain('"status":"failed"');
    expect(log.at(-1)!.data).toBe("[DONE]");
  });

  it("no answer within input_timeout_s: the job fails", async () => {
    const { id } = await awaiting({}, { input_timeout_s: 1 });
    await new Promise((r) => setTimeout(r, 1_100));
    await runDurableObjectAlarm(runStub(id));
    expect(await getJob(id)).toMatchObject({ status: "failed", error: "No input within 1 s at step step_2", input_request: null });
    expect((await answer(id, { action: "approve" })).status).toBe(409);
  });

  it("two answers racing: exactly one wins, the other gets 409", async () => {
    const { id } = await awaiting();
    const answers = await Promise.all([answer(id, { action: "approve" }), answer(id, { action: "reject", input: "no" })]);
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 409]);
    const loser = answers.find((r) => r.status === 409)!;
    expect((await loser.json<{ detail: string }>()).detail).toMatch(/^Job is not awaiting input\. Current status: (queued|running|failed)$/);
  });

  it("an answer sent again under its Idempotency-Key is answered with the job, not given twice", async () => {
    const { id } = await awaiting();
    const keyed = (body: unknown, key: string) => post(`/api/v1/runs/${id}/input`, body, { "Idempotency-Key": key });
    const revised = await keyed({ action: "revise", input: "shorter" }, "answer-1");
    expect(revised.status).toBe(200);
    expect(revised.headers.get("Idempotent-Replayed")).toBeNull();
    // The step ran again and asks again: the revision sent again is not a second revision.
    const asked = await driveTo(id, "awaiting_input");
    const again = await keyed({ action: "revise", input: "shorter" }, "answer-1");
    expect(again.status).toBe(200);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect(await again.json()).toEqual(asked);
    // The same key with another answer is refused, and changes nothing.
    const other = await keyed({ action: "approve" }, "answer-1");
    expect(other.status).toBe(409);
    expect(await other.json()).toEqual({ detail: "Idempotency key already used for another answer" });
    expect(await getJob(id)).toEqual(asked);

    expect((await keyed({ action: "approve", input: "fine" }, "answer-2")).status).toBe(200);
    const done = await drive(id);
    expect(done.status).toBe("succeeded");
    // Sent again after the job ended, and after its object restarted: the job as it is, once approved.
    await abortAllDurableObjects();
    const late = await keyed({ action: "approve", input: "fine" }, "answer-2");
    expect(late.status).toBe(200);
    expect(late.headers.get("Idempotent-Replayed")).toBe("true");
    expect(await late.json()).toEqual(done);
    const log = (await eventLog(id)).map((e) => e.data);
    expect(log.filter((d) => d.includes("input_required"))).toHaveLength(2);
    expect(log.filter((d) => d.includes("Input approved at step step_2"))).toHaveLength(1);
    // Without its key, an answer sent again is the contract's 409.
    expect((await answer(id, { action: "approve", input: "fine" })).status).toBe(409);
  });

  it("a rejection sent again under its key gets the failed job; a malformed key is a 400 and answers nothing", async () => {
    const { id } = await awaiting();
    for (const [key, detail] of [
      ["", "Idempotency-Key must be 1 to 256 characters"],
      ["k".repeat(257), "Idempotency-Key must be 1 to 256 characters"],
      ["a, b", "Idempotency-Key must be sent once, without commas"],
    ]) {
      const res = await post(`/api/v1/runs/${id}/input`, { action: "reject", input: "no" }, { "Idempotency-Key": key });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ detail });
    }
    expect((await getJob(id)).status).toBe("awaiting_input");
    const sent = () => post(`/api/v1/runs/${id}/input`, { action: "reject", input: "no" }, { "Idempotency-Key": "reject-1" });
    const [first, second] = [await sent(), await sent()];
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(second.headers.get("Idempotent-Replayed")).toBe("true");
    expect(await second.json()).toEqual(await first.json());
    expect((await eventLog(id)).filter((e) => e.event === "complete")).toHaveLength(1);
  });

  it("answering a job that never asked is a 409 naming its status; a bad answer is a 422", async () => {
    const id = await submit({ steps: 1 }, { delay_seconds: 3600 });
    const res = await answer(id, { action: "approve" });
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual({ detail: "Job is not awaiting input. Current status: queued" });
    const { id: waiting } = await awaiting();
    for (const body of [{}, { action: "maybe" }, { action: "revise" }, { action: "revise", input: "  " }, { action: "approve", input: "x".repeat(65 * 1024) }]) {
      const bad = await answer(waiting, body);
      expect(bad.status, JSON.stringify(body).slice(0, 40)).toBe(422);
      expect((await bad.json<{ detail: unknown }>()).detail).toBeTruthy();
    }
    expect((await getJob(waiting)).status).toBe("awaiting_input");
    expect((await answer("run_doesnotexist", { action: "approve" })).status).toBe(404);
  });

  it("input null is no input, as for submit's fields: approve goes on, revise is refused", async () => {
    const { id } = await awaiting();
    const refused = await answer(id, { action: "revise", input: null });
    expect(refused.status).toBe(422);
    expect(await refused.json()).toEqual({ detail: [{ loc: ["body", "input"], msg: "revise needs input: the feedback for the step", type: "custom" }] });
    const approved = await answer(id, { action: "approve", input: null });
    expect(approved.status).toBe(200);
    expect((await approved.json<Job>()).input_request).toBeNull();
  });

  it("cancel while awaiting ends it; a later answer is a 409", async () => {
    const { id } = await awaiting();
    const res = await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "cancelled", input_request: null });
    expect(await (await answer(id, { action: "approve" })).json()).toEqual({ detail: "Job is not awaiting input. Current status: cancelled" });
  });

  it.each([
    ["rejected", (id: string) => answer(id, { action: "reject", input: "off topic" })],
    ["cancelled", (id: string) => api(`/api/v1/runs/${id}/cancel`, { method: "POST" })],
  ])("%s while awaiting: the step under review is not finished; its answer stays in the output, and a retry runs it again and asks again", async (_, end) => {
    const { id } = await awaiting();
    const ended = await (await end(id)).json<Job>();
    expect(ended.progress).toMatchObject({ steps_completed: 1, percentage: 33 });
    expect((await getJob(id)).progress).toEqual(ended.progress);
    const progress = (await eventLog(id)).filter((e) => e.event === "progress").at(-1)!;
    expect(JSON.parse(progress.data).data).toEqual({ percentage: 33, step: null, current_step: null });
    expect(await (await api(`/api/v1/runs/${id}/output`)).text()).toBe(
      [1, 2].map((n) => `Step ${n}/3 (step_${n}): simulated answer to: review me\n`).join(""),
    );

    const late = await post(`/api/v1/runs/${id}/retry`, { from_step: 3 });
    expect(await late.json()).toEqual({ detail: "from_step must be at most 2, the first unfinished step" });
    const res = await post(`/api/v1/runs/${id}/retry`, {});
    expect(res.status).toBe(202);
    const again = (await res.json<{ job_id: string }>()).job_id;
    expect((await getJob(again)).progress.steps_completed).toBe(1);
    const asked = await driveTo(again, "awaiting_input");
    expect(asked.input_request).toMatchObject({ step: "step_2", output: "Step 2/3 (step_2): simulated answer to: review me\n" });
  });

  it("no answer in time: the step under review is not finished either; one approved and then cancelled is", async () => {
    const { id: unanswered } = await awaiting({}, { input_timeout_s: 1 });
    await new Promise((r) => setTimeout(r, 1_100));
    await runDurableObjectAlarm(runStub(unanswered));
    expect((await getJob(unanswered)).progress).toMatchObject({ steps_completed: 1 });
    const rerun = (await (await post(`/api/v1/runs/${unanswered}/retry`, {})).json<{ job_id: string }>()).job_id;
    expect((await getJob(rerun)).progress.steps_completed).toBe(1);

    // Approved, the step is finished: cancelled before it runs on, the job keeps it, and so does a retry.
    const { id: approved } = await awaiting();
    expect((await answer(approved, { action: "approve" })).status).toBe(200);
    const cancelled = await (await api(`/api/v1/runs/${approved}/cancel`, { method: "POST" })).json<Job>();
    expect(cancelled).toMatchObject({ status: "cancelled", progress: { steps_completed: 2 } });
    const kept = (await (await post(`/api/v1/runs/${approved}/retry`, {})).json<{ job_id: string }>()).job_id;
    expect((await getJob(kept)).progress.steps_completed).toBe(2);
  });

  it("a revision asked for and not yet run goes with a retry, which runs the step with the feedback; with a new prompt, afresh", async () => {
    const { id } = await awaiting();
    expect((await answer(id, { action: "revise", input: "shorter" })).status).toBe(200);
    // Cancelled before the step ran again (say, while it waited for a run slot).
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    const retried = async (body: unknown) => {
      const again = (await (await post(`/api/v1/runs/${id}/retry`, body)).json<{ job_id: string }>()).job_id;
      return (await driveTo(again, "awaiting_input")).input_request!.output;
    };
    expect(await retried({})).toBe("Step 2/3 (step_2): simulated answer to: review me (revised after: shorter)\n");
    expect(await retried({ prompt: "review this instead" })).toBe("Step 2/3 (step_2): simulated answer to: review this instead\n");
    expect(await retried({ from_step: 1 })).toBe("Step 2/3 (step_2): simulated answer to: review me\n");
  });

  it("delete while awaiting follows PraisonAI's Delete Run page: cancel first, or force", async () => {
    const { id } = await awaiting();
    const refused = await api(`/api/v1/runs/${id}`, { method: "DELETE" });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ detail: "Cannot delete running job. Cancel it first." });
    expect((await api(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
    expect((await getJobStatus(id))).toBe(404);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect(await storedTables(id)).toEqual([]);
  });

  it("the request survives the object's restart, and the answer resumes the job once", async () => {
    const { id, job } = await awaiting({}, { input_timeout_s: 600 });
    await abortAllDurableObjects();
    expect(await getJob(id)).toEqual(job);
    expect((await answer(id, { action: "approve" })).status).toBe(200);
    // The answer reaches the line first: the pool cannot reset an object whose outbox still owes
    // something (test/e2e/restart.test.ts kills the server at that point instead).
    await runDurableObjectAlarm(runStub(id));
    await abortAllDurableObjects();
    expect((await answer(id, { action: "approve" })).status).toBe(409);
    expect((await drive(id)).status).toBe("succeeded");
    expect((await eventLog(id)).filter((e) => e.data.includes("Job resumed"))).toHaveLength(1);
  });

  it("the job's timeout does not run while a person answers", { timeout: 30_000 }, async () => {
    const { id } = await awaiting({ step_ms: 200 }, { timeout: 2 });
    await new Promise((r) => setTimeout(r, 2_200));
    await runDurableObjectAlarm(runStub(id));
    expect((await getJob(id)).status).toBe("awaiting_input");
    expect((await answer(id, { action: "approve" })).status).toBe(200);
    // Over 1 s of its 2 s were left: step 3 (200 ms) still fits.
    expect(await drive(id)).toMatchObject({ status: "succeeded" });
  });
});

async function getJobStatus(id: string): Promise<number> {
  return (await api(`/api/v1/runs/${id}`)).status;
}
