import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { outputPrefix, purgePrefix } from "../src/storage/blobs";
import { api, finished, JOB_ENDPOINTS, getJob, post, r2Keys, runStub, storedTables, submit, submitQueued, waitFor } from "./helpers";

const del = (id: string, query = "") => api(`/api/v1/runs/${id}${query}`, { method: "DELETE" });
const listIds = async (query = "page_size=100") =>
  (await (await api(`/api/v1/runs?${query}`)).json<{ jobs: { job_id: string }[] }>()).jobs.map((j) => j.job_id);

async function expectGone(id: string) {
  for (const [method, path] of JOB_ENDPOINTS) {
    const res = await api(`/api/v1/runs/${id}${path}`, { method });
    expect(res.status, `${method} ${path}`).toBe(404);
    expect(await res.json()).toEqual({ detail: `Job not found: ${id}` });
  }
  expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
  expect(await storedTables(id)).toEqual([]);
  // No alarm is left either: it went with the storage.
  expect(await runInDurableObject(runStub(id), (_instance, state) => state.storage.getAlarm())).toBeNull();
  expect(await listIds(`session_id=${id}`)).toEqual([]);
}

describe("DELETE /api/v1/runs/{id} (PraisonAI's Delete Run page)", () => {
  it.each([
    ["succeeded", {}],
    ["failed", { fail_at_step: 2 }],
  ])("a %s job → 204 and everything of it is gone", async (_status, simulate) => {
    const id = await finished({ steps: 3, output_bytes: 200_000, ...simulate }, { session_id: "del-1" });
    expect((await r2Keys(`runs/default/${id}/`)).length).toBeGreaterThan(0);
    const statsBefore = await (await api("/stats")).json<{ total_jobs: number }>();

    const res = await del(id);
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");

    await expectGone(id);
    expect(await listIds()).not.toContain(id);
    const statsAfter = await (await api("/stats")).json<{ total_jobs: number }>();
    expect(statsAfter.total_jobs).toBe(statsBefore.total_jobs - 1);
    // A later read does not bring it back, and nothing is left scheduled.
    await getJob(id).catch(() => {});
    expect(await storedTables(id)).toEqual([]);
    expect(await runDurableObjectAlarm(runStub(id))).toBe(false);
  });

  it("a cancelled job → 204", async () => {
    const id = await submit();
    await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
    expect((await del(id)).status).toBe(204);
    await expectGone(id);
  });

  it("a queued job → 400 and nothing changes", async () => {
    const id = await submitQueued({}, { session_id: "del-queued" });
    const before = await getJob(id);
    const res = await del(id);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Cannot delete running job. Cancel it first." });
    expect(await getJob(id)).toEqual(before);
    expect(await listIds("session_id=del-queued")).toEqual([id]);
  });

  it("a running job → 400 and it runs on to the end", async () => {
    const id = await submit({ steps: 1, step_ms: 300 });
    const alarm = runDurableObjectAlarm(runStub(id));
    await waitFor(async () => (await getJob(id)).status === "running", "the job to run");
    const res = await del(id);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Cannot delete running job. Cancel it first." });
    await alarm;
    expect((await getJob(id)).status).toBe("succeeded");
  });

  it("an unknown id → 404", async () => {
    const res = await del("run_abc123");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Job not found: run_abc123" });
    expect(await storedTables("run_abc123")).toEqual([]);
  });

  it("the Delete Run page's cancel-then-delete flow", async () => {
    const id = await submit({ steps: 3, step_ms: 200 });
    const status = await getJob(id);
    expect(["queued", "running"]).toContain(status.status);
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    expect((await del(id)).status).toBe(204);
    await expectGone(id);
  });

  it("frees the idempotency key", async () => {
    const res = await post("/api/v1/runs", { prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } } }, { "Idempotency-Key": "del-key" });
    const { job_id } = await res.json<{ job_id: string }>();
    await runDurableObjectAlarm(runStub(job_id));
    expect((await del(job_id)).status).toBe(204);
    const again = await post("/api/v1/runs", { prompt: "q" }, { "Idempotency-Key": "del-key" });
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBeNull();
  });
});

describe("DELETE ?force=true", () => {
  it("cancels and deletes a queued job in one step", async () => {
    const id = await submitQueued();
    expect((await del(id, "?force=true")).status).toBe(204);
    await expectGone(id);
  });

  it("stops a running step and leaves nothing behind, even what the step was writing", async () => {
    const id = await submit({ steps: 2, step_ms: 300, output_bytes: 2_000_000 });
    await runDurableObjectAlarm(runStub(id)); // step 1 written to R2
    const alarm = runDurableObjectAlarm(runStub(id));
    await waitFor(async () => (await getJob(id)).progress.current_step === "step_2", "step 2 to run");
    expect((await del(id, "?force=true")).status).toBe(204);
    await alarm;
    await expectGone(id);
  });

  it("force is read as FastAPI reads a boolean: a false one behaves like a plain delete, other words → 422", async () => {
    const id = await submit();
    for (const word of ["false", "False", "0", "no", "off"]) {
      const res = await del(id, `?force=${word}`);
      expect(res.status, word).toBe(400);
      expect(await res.json()).toEqual({ detail: "Cannot delete running job. Cancel it first." });
    }
    for (const word of ["maybe", ""]) {
      const res = await del(id, `?force=${word}`);
      expect(res.status, word).toBe(422);
      expect(await res.json()).toEqual({ detail: [{ loc: ["query", "force"], msg: "Input should be a valid boolean, unable to interpret input", type: "custom" }] });
    }
    expect((await getJob(id)).status).toBe("running");
  });

  it("force=True (as Python's requests sends True), 1 and yes force the delete", async () => {
    for (const word of ["True", "1", "yes"]) {
      const id = await submitQueued();
      expect((await del(id, `?force=${word}`)).status, word).toBe(204);
      await expectGone(id);
    }
  });
});

describe("a deletion stopped before its object removed itself", () => {
  // As when the object is reset (a deploy, a crash) after its purge and before its own storage went.
  const stopBeforeRemoval = (id: string) =>
    runInDurableObject(runStub(id), (_instance, state) => {
      state.storage.deleteAll = () => {
        throw new Error("injected: the object reset before it removed its storage");
      };
    });

  for (const [what, make, query] of [
    ["a finished job", () => finished({ steps: 2, output_bytes: 3000 }), ""],
    ["a forced delete of a queued job", () => submitQueued({ steps: 1 }), "?force=true"],
  ] as const) {
    it(`${what}: its alarm removes what is left, however the object starts again`, async () => {
      const id = await make();
      await stopBeforeRemoval(id);
      expect((await del(id, query)).status).toBe(500);
      await abortAllDurableObjects();

      // Purged and answering 404; its storage is still there, and its alarm will remove it.
      expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
      expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
      expect(await storedTables(id)).toContain("run");
      expect(await runInDurableObject(runStub(id), (_instance, state) => state.storage.getAlarm())).not.toBeNull();
      expect(await runDurableObjectAlarm(runStub(id))).toBe(true);
      await expectGone(id);
    });
  }
});

describe("purging R2 by prefix", () => {
  // 1,005 objects written one by one first: seconds on a loaded machine.
  it("removes everything under run_1/ and nothing under run_10/", { timeout: 30_000 }, async () => {
    const p1 = outputPrefix("t-prefix", "run_1");
    const p10 = outputPrefix("t-prefix", "run_10");
    expect(p1).toBe("runs/t-prefix/run_1/");
    for (let i = 0; i < 1005; i++) await env.OUTPUTS.put(`${p1}steps/${i}`, "x");
    await env.OUTPUTS.put(`${p10}steps/0001`, "keep");
    await env.OUTPUTS.put("runs/t-prefix/run_1", "sibling without slash");

    expect(await purgePrefix(env.OUTPUTS, p1)).toBe(1005);
    expect(await r2Keys(p1)).toEqual([]);
    expect(await r2Keys(p10)).toEqual([`${p10}steps/0001`]);
    expect(await env.OUTPUTS.head("runs/t-prefix/run_1")).not.toBeNull();
  });
});
