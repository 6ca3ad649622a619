/**
 * The old line's handover: run slots and waiting places a tenant's projection kept before the
 * line had its own object (`slots_to_hand_over`, made by the projection's migrations from them),
 * handed to the tenant's line by the projection's alarm, a batch at a time, so that jobs that
 * were waiting still start. The table goes with its last batch.
 */
import { limits } from "../config";
import { logFailure } from "../log";
import { ringBy } from "../storage/alarm";
import { hasTable } from "../storage/migrations";

/** How many old run slots are handed to the line per call. */
const HANDOVER_BATCH = 500;

/** Whether this projection still has slots to hand over. */
export const hasSlotsToHandOver = (sql: SqlStorage) => hasTable(sql, "slots_to_hand_over");

/** Hands one batch to `tenant`'s line, and brings the alarm forward for the next, or to try again. */
export async function handOver(ctx: DurableObjectState, env: Env, tenant: string): Promise<void> {
  const sql = ctx.storage.sql;
  const ringAt = (at: number) => ringBy(ctx.storage, at, limits(env).alarmDelayMs);
  const rows = sql.exec<{ job_id: string; running: number }>("SELECT job_id, running FROM slots_to_hand_over ORDER BY seq LIMIT ?", HANDOVER_BATCH).toArray();
  try {
    if (rows.length > 0) await env.LINES.getByName(tenant).adopt(rows.map((r) => ({ job_id: r.job_id, running: r.running === 1 })));
  } catch (error) {
    logFailure("handing the old line over failed; trying again later", error);
    return ringAt(Date.now() + 60_000);
  }
  ctx.storage.transactionSync(() => {
    for (const row of rows) sql.exec("DELETE FROM slots_to_hand_over WHERE job_id = ?", row.job_id);
    if (rows.length < HANDOVER_BATCH) sql.exec("DROP TABLE slots_to_hand_over");
  });
  if (rows.length === HANDOVER_BATCH) await ringAt(Date.now());
}
