/**
 * An upgrade from when the projection kept the run slots: the places it kept are handed to the
 * line, so that jobs that were waiting still start and slot holders keep their slots.
 */
import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { hasTable } from "../../src/storage/migrations";
import { api, getJob, lineStub } from "../helpers";
import { enqueue, fireLine, lineCounts } from "./line";

const projection = () => env.PROJECTIONS.getByName("default");

describe("the line's places kept by the projection before the line had its own object", () => {
  it("are handed over: a waiting job starts, a slot holder keeps its slot", async () => {
    const waiting = await enqueue({ delay_seconds: 3600 });
    const holder = await enqueue();
    expect(holder.status).toBe("running");
    // As before the line had its own object: it knows neither job, the projection keeps both.
    await runInDurableObject(lineStub(), (_i, state) => void state.storage.sql.exec("DELETE FROM places"));
    await runInDurableObject(projection(), (_i, state) => {
      state.storage.sql.exec("CREATE TABLE IF NOT EXISTS slots_to_hand_over (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, running INTEGER NOT NULL DEFAULT 0)");
      state.storage.sql.exec("INSERT INTO slots_to_hand_over (job_id, seq, running) VALUES (?, 1, 1), (?, 2, 0)", holder.job_id, waiting.job_id);
    });
    await abortAllDurableObjects();

    expect((await api("/stats")).status).toBe(200); // the projection starts, and sets its alarm
    expect(await runDurableObjectAlarm(projection())).toBe(true);
    expect(await lineCounts()).toMatchObject({ running: 1, waiting: 1, scheduled: 0 });
    expect(await runInDurableObject(projection(), (_i, state) => hasTable(state.storage.sql, "slots_to_hand_over"))).toBe(false);

    await fireLine();
    expect((await getJob(waiting.job_id)).status).toBe("running");
    expect((await getJob(holder.job_id)).status).toBe("running");
    expect(await lineCounts()).toMatchObject({ running: 2, waiting: 0 });
  });
});
