/**
 * A scoped token's submits, counted in its tenant's projection (`token_submits`, `token_keys` and
 * `token_spends`, projectionSchema.ts): exact under any concurrency, as the object runs one call
 * at a time. A submit's idempotency key is kept with its count while that submit may still be
 * under way, and so is the job it is making: a submit cut short between its count and its answer
 * (its Worker stopped) never says whether it made its job, so the job is asked about once it can
 * no longer be under way (and again while it was made and is registered nowhere yet), and the
 * count given back if none was made.
 */
import { limits } from "../config";
import type { Result } from "../errors";
import { runObjectName } from "../ids";
import { logFailure } from "../log";
import type { Job } from "../schemas";
import { ringBy } from "../storage/alarm";
import { tenantOfObject } from "./shards";

/**
 * How long after a token's submit is counted it may still be under way (making its job): a second
 * submit under its key waits for it until then, at most. A submit's own calls take well under a
 * second; a job made since is found by its key anyway.
 */
const SUBMIT_UNDER_WAY_MS = 60_000;

/** The job a counted submit is making, and the projection shard that will hold it. */
export type SpentOn = { job_id: string; projection: string };
/** A counted submit whose end was never heard, as the counter keeps it. */
type Spend = SpentOn & { token_id: string };

/**
 * Counts one submit, unless the token has submitted `max` jobs already (false); `key`, if any, is
 * kept with the count, and so is the job it makes (`spentOn`: none from a Worker from before it
 * was sent), to be asked about at the time returned (null: nothing to ask about).
 */
export function spendSubmit(storage: DurableObjectStorage, tokenId: string, max: number, expiresAtMs: number, key: string | null, spentOn?: SpentOn): number | null | false {
  const sql = storage.sql;
  const now = Date.now();
  return storage.transactionSync(() => {
    sql.exec("DELETE FROM token_submits WHERE token_id IN (SELECT token_id FROM token_submits WHERE expires_at < ? ORDER BY expires_at LIMIT 4)", now);
    sql.exec(
      "DELETE FROM token_keys WHERE (token_id, key) IN (SELECT token_id, key FROM token_keys WHERE under_way_until < ? ORDER BY under_way_until LIMIT 4)",
      now,
    );
    const spent = sql.exec<{ n: number }>("SELECT n FROM token_submits WHERE token_id = ?", tokenId).toArray()[0]?.n ?? 0;
    if (spent >= max) return false as const;
    sql.exec("INSERT INTO token_submits (token_id, n, expires_at) VALUES (?, 1, ?) ON CONFLICT (token_id) DO UPDATE SET n = n + 1", tokenId, expiresAtMs);
    if (key !== null) sql.exec("INSERT OR REPLACE INTO token_keys (token_id, key, under_way_until) VALUES (?, ?, ?)", tokenId, key, now + SUBMIT_UNDER_WAY_MS);
    if (!spentOn) return null;
    const askAt = now + SUBMIT_UNDER_WAY_MS;
    sql.exec("INSERT OR REPLACE INTO token_spends (job_id, token_id, projection, ask_at) VALUES (?, ?, ?, ?)", spentOn.job_id, tokenId, spentOn.projection, askAt);
    return askAt;
  });
}

/** How many counted submits whose end was never heard are asked about per alarm. */
const SPENDS_ASKED_PER_ALARM = 50;
/** How long the alarm waits before it asks again when asking failed, and at least, about a job not yet registered. */
const ASK_AGAIN_MS = 60_000;
/** The longest the counter waits before it asks again about a job not yet registered. */
const ASK_AGAIN_AT_MOST_MS = 600_000;

/**
 * The alarm's errand for the counter (in the projection shard named `name`): each submit counted
 * a minute ago or more whose end was never heard (its Worker stopped between the count and the
 * answer) is asked about, and its count given back unless its job was made: its projection shard
 * holds it or its tombstone (it was deleted since; a job discarded as one its submit never
 * answered with was not made). A job its object holds that no shard holds yet was made by a
 * submit cut short before registering it: it may still find its key held by its repeat's job at
 * its first report, and discard itself. So it is asked about again, later each time (as long as
 * it has waited, a minute to ten), until a shard holds it or its tombstone says what became
 * of it, or its token expires, after which no count matters. `knowsHere` answers for this shard.
 * The alarm is brought forward for what is left.
 */
export async function askAboutSpends(ctx: DurableObjectState, env: Env, name: string, knowsHere: (jobId: string) => boolean): Promise<void> {
  const ringAt = (at: number) => ringBy(ctx.storage, at, limits(env).alarmDelayMs);
  const shardKnows = (spend: Spend) => (spend.projection === name ? knowsHere(spend.job_id) : env.PROJECTIONS.getByName(spend.projection).knows(spend.job_id));
  const sql = ctx.storage.sql;
  for (const spend of dueSpends(sql, SPENDS_ASKED_PER_ALARM)) {
    // The shard first (this one, mostly): the job's object is asked only about a job no shard knows.
    let held: Result<{ job: Job }> | "known";
    try {
      held = (await shardKnows(spend)) ? "known" : await env.RUNS.getByName(runObjectName(tenantOfObject(name), spend.job_id)).get();
    } catch (error) {
      logFailure("asking whether a token's submit made its job failed; trying again later", error, { job_id: spend.job_id });
      return ringAt(Date.now() + ASK_AGAIN_MS);
    }
    // Settled, a count given back if no job was made, else only no longer asked about; or asked again.
    if (held === "known") submitMade(sql, spend.token_id, null, spend.job_id);
    else if (held.ok) askAgain(sql, spend, Date.parse(held.job.created_at));
    else refundSubmit(ctx.storage, spend.token_id, null, spend.job_id);
  }
  const next = sql.exec<{ at: number | null }>("SELECT MIN(ask_at) AS at FROM token_spends").one().at;
  if (next !== null) await ringAt(next);
}

/**
 * A counted submit's job that exists but is registered nowhere yet (made `createdAt`): asked about
 * again once it has waited as long again (a minute to ten), and no later than its token's
 * expiry; no longer, once the token has expired.
 */
function askAgain(sql: SqlStorage, spend: Spend, createdAt: number): void {
  const now = Date.now();
  const expiresAt = sql.exec<{ expires_at: number }>("SELECT expires_at FROM token_submits WHERE token_id = ?", spend.token_id).toArray()[0]?.expires_at;
  if (expiresAt === undefined || expiresAt < now) return forgetSpend(sql, spend.job_id);
  const wait = Math.min(Math.max(now - (Number.isNaN(createdAt) ? now : createdAt), ASK_AGAIN_MS), ASK_AGAIN_AT_MOST_MS);
  sql.exec("UPDATE token_spends SET ask_at = ? WHERE job_id = ?", Math.min(now + wait, expiresAt + 1), spend.job_id);
}

/** Counted submits whose end was never heard, due to be asked about, oldest first. */
function dueSpends(sql: SqlStorage, limit: number): Spend[] {
  return sql
    .exec<Spend>("SELECT job_id, token_id, projection FROM token_spends WHERE ask_at <= ? ORDER BY ask_at LIMIT ?", Date.now(), limit)
    .toArray();
}

/** A counted submit made its job (`jobId`): neither its key nor its job need be kept with its count. */
export function submitMade(sql: SqlStorage, tokenId: string, key: string | null, jobId: string): void {
  if (key !== null) releaseSubmitKey(sql, tokenId, key);
  forgetSpend(sql, jobId);
}

/** The counted submit making `jobId` is no longer asked about. */
function forgetSpend(sql: SqlStorage, jobId: string): void {
  sql.exec("DELETE FROM token_spends WHERE job_id = ?", jobId);
}

/** Whether a submit under `key` was counted lately and not given back: it may be under way. */
export function submitUnderWay(sql: SqlStorage, tokenId: string, key: string): boolean {
  return sql.exec("SELECT 1 FROM token_keys WHERE token_id = ? AND key = ? AND under_way_until >= ?", tokenId, key, Date.now()).toArray().length > 0;
}

/** A counted submit under `key` is no longer under way. */
export function releaseSubmitKey(sql: SqlStorage, tokenId: string, key: string): void {
  sql.exec("DELETE FROM token_keys WHERE token_id = ? AND key = ?", tokenId, key);
}

/** How many submits the token has spent: 0 for one never seen, or expired. */
export function submitsSpent(sql: SqlStorage, tokenId: string): number {
  return sql.exec<{ n: number }>("SELECT n FROM token_submits WHERE token_id = ? AND expires_at >= ?", tokenId, Date.now()).toArray()[0]?.n ?? 0;
}

/** Gives a submit back, with the key it came under and the job it was to make. */
export function refundSubmit(storage: DurableObjectStorage, tokenId: string, key: string | null, jobId?: string): void {
  storage.transactionSync(() => {
    storage.sql.exec("UPDATE token_submits SET n = n - 1 WHERE token_id = ? AND n > 0", tokenId);
    if (key !== null) releaseSubmitKey(storage.sql, tokenId, key);
    if (jobId !== undefined) forgetSpend(storage.sql, jobId);
  });
}
