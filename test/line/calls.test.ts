import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { DUE_TIMES } from "../../src/tenant/lineSchema";
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

  it("progress held back goes out a second after the first change it holds, however often steps end meanwhile", async () => {
    const id = await submitCounted([], { prompt: "count", session_id: "held-back", config: { simulate: { steps: 4, step_ms: 1 } } });
    await runDurableObjectAlarm(runStub(id)); // step 1
    await new Promise((r) => setTimeout(r, 500));
    await runDurableObjectAlarm(runStub(id)); // step 2, within the second: its progress rides with step 1's
    await new Promise((r) => setTimeout(r, 600));
    await runDurableObjectAlarm(runStub(id)); // a second after step 1: what was held back goes out
    expect((await listed("held-back")).progress.steps_completed).toBeGreaterThanOrEqual(2);
    expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    await settle(id);
  });
});

describe("rows read in a long line", () => {
  it("its next delayed start, next expiry, next job to tell and due jobs are found by index: a few rows read with 4,000 jobs delayed and waiting", async () => {
    const line = env.LINES.getByName(`long-${crypto.randomUUID()}`);
    await runInDurableObject(line, (_instance, state) => {
      const sql = state.storage.sql;
      const later = Date.now() + 86_400_000;
      for (let i = 0; i < 4000; i++) {
        const delayed = i % 2 === 1;
        sql.exec(
          "INSERT INTO places (job_id, state, priority, start_at, expires_at, joined_at) VALUES (?, ?, 5, ?, ?, 0)",
          `run_long${i}`,
          delayed ? "scheduled" : "waiting",
          delayed ? later + i : null,
          later + i,
        );
      }
      // A job still to be told something, to try again later.
      sql.exec("UPDATE places SET told = 0, retry_at = ? WHERE job_id = 'run_long7'", later + 7);
      // Rows read is what Cloudflare bills a SQLite object for; every submit and every end asks for
      // the line's next due times. A few, where walking either state would read 2,000.
      const FEW = 10;
      const read = (query: string, ...params: number[]) => {
        const cursor = sql.exec(query, ...params);
        const rows = cursor.toArray();
        return { rows, rowsRead: cursor.rowsRead };
      };
      const next = read(DUE_TIMES.next, Date.now());
      expect(next.rows).toEqual([{ start_at: later + 1, expires_at: later, tell_at: later + 7 }]);
      expect(next.rowsRead).toBeLessThanOrEqual(FEW);
      for (const query of [DUE_TIMES.promoteDue, DUE_TIMES.expireOverdue]) expect(read(query, Date.now()).rowsRead).toBeLessThanOrEqual(FEW);
      // None was due: nothing moved.
      expect(sql.exec("SELECT state, COUNT(*) AS n FROM places GROUP BY state ORDER BY state").toArray()).toEqual([
        { state: "scheduled", n: 2000 },
        { state: "waiting", n: 2000 },
      ]);
    });
  });
});
