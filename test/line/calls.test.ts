import { env, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { countingStubs, overlay, withBindings } from "../faults";
import { api, drive, runStub, settle } from "../helpers";

/** The Worker's and the job's bindings, with every call on the tenant's objects recorded. */
function counting(calls: string[]): Partial<Env> {
  return { PROJECTIONS: countingStubs(env.PROJECTIONS, "projection", calls), LINES: countingStubs(env.LINES, "line", calls) };
}

async function submitCounted(calls: string[], body: unknown): Promise<string> {
  const countedEnv = overlay(env, counting(calls));
  const res = await app.request("http://localhost/api/v1/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }, countedEnv);
  expect(res.status).toBe(202);
  const { job_id } = await res.json<{ job_id: string }>();
  await withBindings(job_id, counting(calls));
  return job_id;
}

const listed = async (session: string) =>
  (await api(`/api/v1/runs?session_id=${session}`).then((r) => r.json<{ jobs: { status: string; progress: { steps_completed: number } }[] }>())).jobs[0];

describe("calls on the tenant's objects", () => {
  it("a 3-step job makes at most 4 in all, from its submit to its end", async () => {
    const calls: string[] = [];
    const id = await submitCounted(calls, { prompt: "count", session_id: "counted", config: { simulate: { steps: 3, step_ms: 1 } } });
    expect(calls).toEqual(["line.join", "projection.admit"]);
    expect((await drive(id)).status).toBe("succeeded");
    expect(calls).toEqual(["line.join", "projection.admit", "line.leave", "projection.upsert"]);
    expect(await listed("counted")).toMatchObject({ status: "succeeded", progress: { steps_completed: 3 } });
  });

  it("status changes reach the projection at once, progress at most once a second", async () => {
    const calls: string[] = [];
    const id = await submitCounted(calls, { prompt: "count", session_id: "paced", config: { simulate: { steps: 3, step_ms: 1 } } });
    await runDurableObjectAlarm(runStub(id)); // step 1
    expect(await listed("paced")).toMatchObject({ status: "running", progress: { steps_completed: 0 } });
    await new Promise((r) => setTimeout(r, 1050));
    // A second later, the progress held back goes out (before step 2 runs).
    await runDurableObjectAlarm(runStub(id));
    expect(await listed("paced")).toMatchObject({ status: "running", progress: { steps_completed: 1 } });
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    await settle(id);
    expect(await listed("paced")).toMatchObject({ status: "cancelled" });
    expect(calls.filter((c) => c === "projection.upsert")).toHaveLength(2);
  });
});
