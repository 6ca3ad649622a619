/**
 * One Durable Object per bulk operation, named `<tenant>/<bulk_id>`: the jobs it matched when it
 * was asked for, and what became of each. Its alarm works through them in bounded batches, asking
 * each job's own object to cancel or delete it, exactly as the single routes do; a request only
 * reads its progress. A finished operation removes itself after BULK_RETENTION_MS.
 */
import { DurableObject } from "cloudflare:workers";
import { limits } from "../config";
import type { Result } from "../errors";
import { isJobId, runObjectName } from "../ids";
import { logFailure } from "../log";
import type { RunObject } from "../run/RunObject";
import { hasTable, migrate } from "../storage/migrations";

export type BulkAction = "cancel" | "delete";

/** What a bulk operation reports: how many jobs it matched and what became of them so far. */
export interface BulkProgress {
  bulk_id: string;
  action: BulkAction;
  matched: number;
  done: number;
  skipped: number;
  failed: number;
  state: "running" | "done";
}

/** Jobs asked at once, and per alarm. */
const CONCURRENCY = 20;
const BATCH = 100;
/**
 * How often a job that could not be reached is asked (a call that failed: its object reset by a
 * deploy, overloaded, the connection lost), a later alarm each time, before it counts as failed.
 */
export const BULK_REACH_ATTEMPTS = 3;
/** How long a finished operation's report is kept. */
export const BULK_RETENTION_MS = 7 * 86_400_000;

export const BULK_MIGRATIONS = [
  `CREATE TABLE operation (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     bulk_id TEXT NOT NULL, tenant TEXT NOT NULL, action TEXT NOT NULL, force INTEGER NOT NULL,
     created_at INTEGER NOT NULL, finished_at INTEGER)`,
  // outcome: NULL until the job was asked; then done, skipped (not in a state the action applies to, or gone) or failed
  // (an answer that is a failure, or no answer BULK_REACH_ATTEMPTS times).
  `CREATE TABLE targets (job_id TEXT PRIMARY KEY, outcome TEXT)`,
  `CREATE INDEX targets_pending ON targets (outcome) WHERE outcome IS NULL`,
  // How often the job could not be reached; it stays pending until BULK_REACH_ATTEMPTS.
  `ALTER TABLE targets ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0`,
  // 1 once the job was asked. An ask may have done its work unheard (its answer lost, or the
  // operation's object reset before writing the outcome), so a job asked again that is found
  // gone (delete) or cancelled (cancel) is one the operation's own ask reached: done.
  `ALTER TABLE targets ADD COLUMN asked INTEGER NOT NULL DEFAULT 0`,
] as const;

type Operation = { bulk_id: string; tenant: string; action: BulkAction; force: number; finished_at: number | null };
type Outcome = "done" | "skipped" | "failed";
/** What asking one job came to: an outcome, or no answer (to be asked again). */
type Asked = Outcome | "unreached";

export class BulkObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    // An operation begun by an earlier version takes the steps added since before its alarm runs.
    if (hasTable(this.sql, "operation")) void ctx.blockConcurrencyWhile(async () => migrate(ctx.storage, BULK_MIGRATIONS));
  }

  /** Records the operation and its jobs; the alarm starts on them at once. Idempotent. */
  async begin(bulkId: string, tenant: string, action: BulkAction, force: boolean, jobIds: string[]): Promise<BulkProgress> {
    migrate(this.ctx.storage, BULK_MIGRATIONS);
    if (!this.operation()) {
      this.ctx.storage.transactionSync(() => {
        this.sql.exec("INSERT INTO operation (id, bulk_id, tenant, action, force, created_at) VALUES (1, ?, ?, ?, ?, ?)", bulkId, tenant, action, force ? 1 : 0, Date.now());
        for (const id of new Set(jobIds)) this.sql.exec("INSERT INTO targets (job_id) VALUES (?)", id);
        if (jobIds.length === 0) this.sql.exec("UPDATE operation SET finished_at = ?", Date.now());
      });
      await this.ctx.storage.setAlarm(Date.now() + limits(this.env).alarmDelayMs);
    }
    return this.progress()!;
  }

  progress(): BulkProgress | null {
    const op = this.operation();
    if (!op) return null;
    const counts: Record<Outcome | "pending", number> = { done: 0, skipped: 0, failed: 0, pending: 0 };
    for (const row of this.sql.exec<{ outcome: Outcome | null; n: number }>("SELECT outcome, COUNT(*) AS n FROM targets GROUP BY outcome")) {
      counts[row.outcome ?? "pending"] = row.n;
    }
    return {
      bulk_id: op.bulk_id,
      action: op.action,
      matched: counts.done + counts.skipped + counts.failed + counts.pending,
      done: counts.done,
      skipped: counts.skipped,
      failed: counts.failed,
      state: op.finished_at === null ? "running" : "done",
    };
  }

  /**
   * One batch of jobs, then the next alarm; a finished operation's alarm removes it. A job that
   * could not be reached is asked again by a later alarm, after a wait. Never fails.
   */
  async alarm(): Promise<void> {
    const op = this.operation();
    if (!op) return;
    const settings = limits(this.env);
    if (op.finished_at !== null) {
      if (Date.now() >= op.finished_at + BULK_RETENTION_MS) await this.ctx.storage.deleteAll();
      else await this.ctx.storage.setAlarm(op.finished_at + BULK_RETENTION_MS);
      return;
    }
    try {
      const batch = this.sql.exec<{ job_id: string; asked: number }>("SELECT job_id, asked FROM targets WHERE outcome IS NULL LIMIT ?", BATCH).toArray();
      let unreached = false;
      for (let i = 0; i < batch.length; i += CONCURRENCY) {
        const slice = batch.slice(i, i + CONCURRENCY);
        this.sql.exec("UPDATE targets SET asked = 1 WHERE asked = 0 AND job_id IN (SELECT value FROM json_each(?))", JSON.stringify(slice.map((t) => t.job_id)));
        const asked = await Promise.all(slice.map((t) => this.apply(op, t.job_id, t.asked === 1)));
        this.ctx.storage.transactionSync(() => {
          slice.forEach((t, k) => {
            if (asked[k] !== "unreached") return void this.sql.exec("UPDATE targets SET outcome = ? WHERE job_id = ?", asked[k], t.job_id);
            unreached = true;
            this.sql.exec(
              "UPDATE targets SET attempts = attempts + 1, outcome = CASE WHEN attempts + 1 >= ? THEN 'failed' END WHERE job_id = ?",
              BULK_REACH_ATTEMPTS,
              t.job_id,
            );
          });
        });
      }
      if (this.sql.exec("SELECT 1 FROM targets WHERE outcome IS NULL LIMIT 1").toArray().length === 0) {
        const finishedAt = Date.now();
        this.sql.exec("UPDATE operation SET finished_at = ?", finishedAt);
        await this.ctx.storage.setAlarm(finishedAt + BULK_RETENTION_MS);
      } else {
        await this.ctx.storage.setAlarm(Date.now() + (unreached ? settings.retryBaseMs : 0) + settings.alarmDelayMs);
      }
    } catch (error) {
      logFailure("a bulk operation's batch failed; trying again later", error, { bulk_id: op.bulk_id });
      await this.ctx.storage.setAlarm(Date.now() + settings.retryBaseMs + settings.alarmDelayMs);
    }
  }

  /**
   * The action on one job, through its own object, as the single route does it. `askedBefore`:
   * an earlier ask went out unheard, and may be what left the job gone or cancelled.
   */
  private async apply(op: Operation, jobId: string, askedBefore: boolean): Promise<Asked> {
    if (!isJobId(jobId)) return "skipped";
    const run = this.env.RUNS.getByName(runObjectName(op.tenant, jobId));
    try {
      // Either answer is a Result; RPC's typing of the two together loses the failure half.
      const result = (op.action === "cancel" ? await run.cancel() : await run.delete(op.force === 1)) as unknown as Result<object>;
      if (result.ok) return "done";
      const { code } = result;
      // A deleted job whose purge will be finished by its own alarm is gone all the same.
      if (code === "purge_failed") return "done";
      if (askedBefore && op.action === "delete" && code === "not_found") return "done";
      if (askedBefore && op.action === "cancel" && code === "invalid_state" && (await this.cancelled(run))) return "done";
      return code === "invalid_state" || code === "not_found" ? "skipped" : "failed";
    } catch (error) {
      logFailure("a bulk operation could not reach a job", error, { bulk_id: op.bulk_id, job_id: jobId });
      return "unreached";
    }
  }

  /** Whether the job is cancelled now (by this operation's earlier ask, or otherwise). */
  private async cancelled(run: DurableObjectStub<RunObject>): Promise<boolean> {
    const current = await run.get();
    return current.ok && current.job.status === "cancelled";
  }

  private operation(): Operation | null {
    if (!hasTable(this.sql, "operation")) return null;
    return this.sql.exec<Operation>("SELECT bulk_id, tenant, action, force, finished_at FROM operation WHERE id = 1").toArray()[0] ?? null;
  }
}
