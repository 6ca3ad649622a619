/**
 * A RunObject's outbox: every side effect the job owes to something else, committed with the
 * change that caused it and delivered by the alarm, idempotently, until it lands. One row per
 * kind, one handler per kind; a handler gets the object's `ctx` and `env` and nothing else.
 *
 * - `projection`: the job's newest snapshot, for the tenant's list and stats, with the idempotency
 *   key it claims (a job its submit never registered takes its key, or learns it is superseded);
 * - `line`: the job left the tenant's line (it ended, stopped for input, or was deleted), or
 *   joins it again (answered);
 * - `webhook`: the webhook of the job's latest pause or end;
 * - `purge`: a deleted job's output in R2 and its projection row.
 */
import { limits, webhookSecrets } from "../config";
import type { Job } from "../schemas";
import { inlineResult, outputPrefix, purgePrefix } from "../storage/blobs";
import { hasTable } from "../storage/migrations";
import { retryDelay, sendWebhook } from "../webhooks/delivery";
import { durationSeconds, outputUrl, tenantObjects, toJob, usageOf, type KeyClaim, type PlaceRequest } from "./job";
import { finishedParts, fitsInBytes, readRunRow, readSpec, readWebhook } from "./store";

export type OutboxKind = "projection" | "line" | "webhook" | "purge";

/** A job's progress reaches the projection at most this often; status changes go at once. */
export const PROGRESS_INTERVAL_MS = 1_000;

/**
 * Which job, and the tenant objects it reports to. A row written before the tenant had shards
 * names neither object: they are the tenant's own.
 */
interface JobRef {
  tenant: string;
  job_id: string;
  projection?: string;
  line?: string;
}
/** The job's newest snapshot; with the idempotency key it claims, if it has one (`keyClaim`). */
type Snapshot = JobRef & { job: Job; version: number; claim?: KeyClaim };
/** The line's row: leave the line, or (`rejoin`) wait in it again. The newest row replaces an older one. */
type LineChange = JobRef & { rejoin?: PlaceRequest; answered_at?: number };
/** A deleted job's purge; `discarded`: a job its submit never answered with (a row written before it was known has none). */
type Purge = JobRef & { discarded?: true };

/**
 * A handler's answer: done, or not yet (try again at `retryAt`). Throwing means: retry with
 * backoff. `superseded`: the projection found the job's idempotency key held by another job.
 */
type Handled = { done: true; superseded?: true } | { done: false; retryAt: number };
type Handler = (ctx: DurableObjectState, env: Env, payload: string) => Promise<Handled>;

const DONE: Handled = { done: true };

const HANDLERS: Record<OutboxKind, Handler> = {
  async projection(_ctx, env, payload) {
    const snapshot = JSON.parse(payload) as Snapshot;
    const upserted = await env.PROJECTIONS.getByName(tenantObjects(snapshot).projection).upsert(snapshot.job, snapshot.version, snapshot.claim);
    // A projection of the version before (during a deploy) answers nothing, and takes no claim.
    return upserted?.superseded_by ? { done: true, superseded: true } : DONE;
  },
  async line(_ctx, env, payload) {
    const change = JSON.parse(payload) as LineChange;
    const line = env.LINES.getByName(tenantObjects(change).line);
    if (change.rejoin) await line.rejoin(change.rejoin, change.answered_at ?? 0);
    else await line.leave(change.job_id);
    return DONE;
  },
  async purge(ctx, env, payload) {
    const ref = JSON.parse(payload) as Purge;
    const { tenant, job_id } = ref;
    // A webhook still owed keeps its body, which may quote the output about to be purged.
    await fixWebhookBody(ctx, env);
    await purgePrefix(env.OUTPUTS, outputPrefix(tenant, job_id));
    // The job's final usage stays in the tenant's totals, whether or not its last snapshot went out.
    const row = readRunRow(ctx.storage.sql);
    await env.PROJECTIONS.getByName(tenantObjects(ref).projection).remove(job_id, row ? usageOf(row) : undefined, ref.discarded === true);
    return DONE;
  },
  webhook: deliverWebhook,
};

/** Delivery order when several rows are due: the purge first, the webhook last. */
const ORDER: OutboxKind[] = ["purge", "line", "projection", "webhook"];

export class Outbox {
  constructor(private readonly ctx: DurableObjectState) {}

  private get sql() {
    return this.ctx.storage.sql;
  }

  enqueue(kind: OutboxKind, payload: object, dueAt: number): void {
    this.sql.exec(
      "INSERT INTO outbox (kind, payload, due_at, attempts) VALUES (?, ?, ?, 0) ON CONFLICT (kind) DO UPDATE SET payload = excluded.payload, due_at = excluded.due_at, attempts = 0",
      kind,
      JSON.stringify(payload),
      dueAt,
    );
  }

  /**
   * The job's newest snapshot for the projection: at once after a status change. Progress alone
   * waits up to a second, and whatever comes meanwhile rides with it (a pending snapshot keeps its
   * time), so progress reaches the projection at most once a second.
   */
  enqueueSnapshot(snapshot: Snapshot, statusChanged: boolean): void {
    const now = Date.now();
    const pending = this.sql.exec<{ due_at: number }>("SELECT due_at FROM outbox WHERE kind = 'projection'").toArray()[0];
    const due = statusChanged ? now : (pending?.due_at ?? now + PROGRESS_INTERVAL_MS);
    this.enqueue("projection", snapshot, due);
  }

  drop(kind: OutboxKind): void {
    this.sql.exec("DELETE FROM outbox WHERE kind = ?", kind);
  }

  has(kind: OutboxKind): boolean {
    return this.sql.exec("SELECT 1 FROM outbox WHERE kind = ?", kind).toArray().length > 0;
  }

  isEmpty(): boolean {
    return this.sql.exec("SELECT 1 FROM outbox LIMIT 1").toArray().length === 0;
  }

  earliestDue(): number | null {
    return this.sql.exec<{ due: number | null }>("SELECT MIN(due_at) AS due FROM outbox").one().due;
  }

  /**
   * Delivers the due rows of `kinds`, in order, with the object's `env` as it is now. A failure
   * is retried with backoff. For a deletion (`now`), the rows are tried whenever they are due,
   * and the first failure is also thrown, for the caller to say so. "superseded": another job
   * holds the idempotency key this one claimed; nothing after the snapshot was delivered (its
   * webhook), and the job is the caller's to discard.
   */
  async drain(env: Env, kinds: readonly OutboxKind[] = ORDER, deletion?: "now"): Promise<"superseded" | undefined> {
    const strict = deletion === "now";
    const due = this.sql
      .exec<{ kind: OutboxKind; payload: string; attempts: number }>(
        "SELECT kind, payload, attempts FROM outbox WHERE due_at <= ?",
        strict ? Number.MAX_SAFE_INTEGER : Date.now(),
      )
      .toArray();
    for (const kind of ORDER.filter((k) => kinds.includes(k))) {
      const row = due.find((r) => r.kind === kind);
      if (!row) continue;
      let handled: Handled;
      try {
        handled = await HANDLERS[kind](this.ctx, env, row.payload);
      } catch (error) {
        if (!this.alive()) return;
        this.retryLater(kind, row.payload, row.attempts, limits(env).retryBaseMs);
        if (strict) throw error;
        continue;
      }
      // The object may have been purged meanwhile, or a newer payload queued: keep that one.
      if (!this.alive()) return;
      if (handled.done) {
        this.sql.exec("DELETE FROM outbox WHERE kind = ? AND payload = ?", kind, row.payload);
        if (handled.superseded) return "superseded";
      } else {
        this.sql.exec("UPDATE outbox SET due_at = ?, attempts = attempts + 1 WHERE kind = ? AND payload = ?", handled.retryAt, kind, row.payload);
      }
    }
  }

  private retryLater(kind: OutboxKind, payload: string, attempts: number, baseMs: number): void {
    const backoff = Math.min(300_000, baseMs * 2 ** Math.min(attempts, 16));
    this.sql.exec("UPDATE outbox SET attempts = attempts + 1, due_at = ? WHERE kind = ? AND payload = ?", Date.now() + backoff, kind, payload);
  }

  /** False once the object's storage has been deleted: nothing may be written after. */
  private alive(): boolean {
    return hasTable(this.sql, "outbox");
  }
}

/**
 * Records that the job ended or stopped for input: its webhook is owed from now. `body` fixes
 * the body now; null fixes it at the first attempt. One still undelivered is replaced: the
 * receiver hears of the job's newest state, not of one it has already left.
 */
export function owesWebhook(ctx: DurableObjectState, outbox: Outbox, messageId: string, body: string | null = null): void {
  ctx.storage.sql.exec(
    `INSERT INTO webhook (id, message_id, state, body) VALUES (1, ?, 'pending', ?)
     ON CONFLICT (id) DO UPDATE SET message_id = excluded.message_id, state = 'pending', attempts = 0, last_status = NULL,
       last_error = NULL, last_attempt_at = NULL, first_attempt_at = NULL, body = excluded.body`,
    messageId,
    body,
  );
  // The row names its message: an attempt at an earlier message, answered after this one was
  // owed, leaves this row alone (`drain` removes a row it handled only while its payload is the same).
  outbox.enqueue("webhook", { message_id: messageId }, Date.now());
}

/**
 * One attempt to deliver the terminal-state webhook. The body is fixed at the first attempt
 * and the message id never changes, so a receiver can deduplicate retries. 2xx ends it, 410
 * stops it, anything else is retried with backoff until the retry window has passed.
 */
async function deliverWebhook(ctx: DurableObjectState, env: Env): Promise<Handled> {
  const sql = ctx.storage.sql;
  const hook = readWebhook(sql);
  const url = readSpec(sql).webhook_url;
  if (!hook || hook.state !== "pending" || !url) return DONE;
  const body = hook.body ?? (await terminalBody(ctx, env));
  const firstAttemptAt = hook.first_attempt_at ?? Date.now();
  const outcome = await sendWebhook(url, hook.message_id, body, webhookSecrets(env));
  // Purged meanwhile; or the job moved on while the call was out (cancelled while awaiting input,
  // say), and its newer call, owed now, is not the one this attempt sent.
  if (!hasTable(sql, "webhook") || readWebhook(sql)?.message_id !== hook.message_id) return DONE;
  const now = Date.now();
  const status = "status" in outcome ? outcome.status : null;
  const settings = limits(env);
  const state =
    status !== null && status >= 200 && status < 300
      ? "delivered"
      : status === 410
        ? "stopped"
        : now - firstAttemptAt >= settings.webhookRetryWindowMs
          ? "failed"
          : "pending";
  const attempts = hook.attempts + 1;
  sql.exec(
    "UPDATE webhook SET state = ?, attempts = ?, last_status = ?, last_error = ?, last_attempt_at = ?, first_attempt_at = ?, body = ? WHERE id = 1",
    state,
    attempts,
    status,
    "error" in outcome ? outcome.error : null,
    now,
    firstAttemptAt,
    body,
  );
  const asked = "retryAfterMs" in outcome ? outcome.retryAfterMs : undefined;
  return state === "pending" ? { done: false, retryAt: now + retryDelay(attempts, settings.webhookRetryBaseMs, asked) } : DONE;
}

/** Fixes the owed webhook's body now, while the output it may quote is still there. */
async function fixWebhookBody(ctx: DurableObjectState, env: Env): Promise<void> {
  const hook = readWebhook(ctx.storage.sql);
  if (!hook || hook.state !== "pending" || hook.body !== null) return;
  const body = await terminalBody(ctx, env);
  ctx.storage.sql.exec("UPDATE webhook SET body = ? WHERE id = 1 AND body IS NULL AND message_id = ?", body, hook.message_id);
}

/**
 * The most a webhook body may come to: it is kept in the job's object (one SQLite row, refused
 * over 2 MiB) until delivered, and an inline result grows when escaped as JSON (a control
 * character to six bytes, a quote or a line break to two).
 */
const MAX_WEBHOOK_BODY_BYTES = 1_500_000;

/**
 * The webhook body of the job's end: the result inline when the job succeeded and it fits
 * (INLINE_RESULT_BYTES, and the body within MAX_WEBHOOK_BODY_BYTES once escaped), else null; the
 * receiver reads the whole at /result or /output.
 */
async function terminalBody(ctx: DurableObjectState, env: Env): Promise<string> {
  const sql = ctx.storage.sql;
  const spec = readSpec(sql);
  const job = toJob(spec, readRunRow(sql)!);
  const result = job.status === "succeeded" ? await inlineResult(env.OUTPUTS, finishedParts(sql), limits(env).inlineResultBytes) : null;
  const url = outputUrl(spec);
  const body = webhookBody(job, result, url);
  return result === null || fitsInBytes(body, MAX_WEBHOOK_BODY_BYTES) ? body : webhookBody(job, null, url);
}

/**
 * The contract's webhook body, with `event` naming what happened (`run.<status>`) and, as /result
 * gives it, `result_url`: where the whole output is read, also when `result` is not inline.
 */
export function webhookBody(job: Job, result: string | null, resultUrl: string | null): string {
  return JSON.stringify({
    event: `run.${job.status}`,
    job_id: job.job_id,
    status: job.status,
    result,
    result_url: resultUrl,
    error: job.error,
    completed_at: job.completed_at,
    duration_seconds: durationSeconds(job),
    usage: job.usage,
    ...(job.input_request ? { input_request: job.input_request } : {}),
  });
}
