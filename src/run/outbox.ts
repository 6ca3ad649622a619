/**
 * A RunObject's outbox: side effects owed to other parts (the tenant index, the webhook target)
 * that committed with the change that caused them and are delivered, idempotently, until they
 * land. One row per kind; the purge after a delete is a row too, run by the object itself.
 */
import type { Limits } from "../config";
import type { TenantIndex } from "../index/TenantIndex";
import type { Job } from "../schemas";
import { inlineResult, type OutputPart } from "../storage/blobs";
import { retryDelay, sendWebhook } from "../webhooks/delivery";
import { durationSeconds, type RunSpec } from "./job";
import { readWebhook } from "./store";

/** What the outbox needs of its object; `env` is read on every use. */
export interface OutboxHost {
  readonly storage: DurableObjectStorage;
  readonly env: Env;
  readonly limits: Limits;
  /** False once the object's storage has been deleted: nothing may be written after. */
  hasJob(): boolean;
  spec(): RunSpec;
  currentJob(): Job | null;
  finishedParts(): OutputPart[];
  index(): DurableObjectStub<TenantIndex>;
}

export class Outbox {
  constructor(private readonly host: OutboxHost) {}

  private get sql() {
    return this.host.storage.sql;
  }

  enqueue(kind: string, payload: object, dueAt: number): void {
    this.sql.exec(
      "INSERT INTO outbox (kind, payload, due_at, attempts) VALUES (?, ?, ?, 0) ON CONFLICT (kind) DO UPDATE SET payload = excluded.payload, due_at = excluded.due_at, attempts = 0",
      kind,
      JSON.stringify(payload),
      dueAt,
    );
  }

  drop(kind: string): void {
    this.sql.exec("DELETE FROM outbox WHERE kind = ?", kind);
  }

  earliestDue(): number | null {
    return this.sql.exec<{ due: number | null }>("SELECT MIN(due_at) AS due FROM outbox").one().due;
  }

  /** Delivers due rows (not the purge, which the object runs); a failure is retried with backoff. */
  async drain(): Promise<void> {
    if (!this.host.hasJob()) return;
    const rows = this.sql
      .exec<{ kind: string; payload: string }>("SELECT kind, payload FROM outbox WHERE kind != 'purge' AND due_at <= ?", Date.now())
      .toArray();
    for (const row of rows) {
      if (row.kind === "webhook") {
        await this.deliverWebhook();
        if (!this.host.hasJob()) return;
        continue;
      }
      try {
        const { job, version } = JSON.parse(row.payload) as { job: Job; version: number };
        await this.host.index().upsert(job, version);
        if (!this.host.hasJob()) return;
        // A newer payload may have been queued while this one was in flight: keep it.
        this.sql.exec("DELETE FROM outbox WHERE kind = ? AND payload = ?", row.kind, row.payload);
      } catch {
        if (!this.host.hasJob()) return;
        this.retryLater(row.kind, row.payload);
      }
    }
  }

  retryLater(kind: string, payload?: string): void {
    this.sql.exec(
      "UPDATE outbox SET attempts = attempts + 1, due_at = ? + MIN(300000, 1000 * (1 << MIN(attempts, 16))) WHERE kind = ? AND (? IS NULL OR payload = ?)",
      Date.now(),
      kind,
      payload ?? null,
      payload ?? null,
    );
  }

  /** Records that the job ended: its webhook, if it has one, is owed from now. */
  owesWebhook(messageId: string): void {
    this.sql.exec("INSERT INTO webhook (id, message_id, state) VALUES (1, ?, 'pending')", messageId);
    this.enqueue("webhook", {}, Date.now());
  }

  /**
   * One attempt to deliver the terminal-state webhook. The body is fixed at the first attempt
   * and the message id never changes, so a receiver can deduplicate retries. 2xx ends it, 410
   * stops it, anything else is retried with backoff until the retry window has passed.
   */
  private async deliverWebhook(): Promise<void> {
    const hook = readWebhook(this.sql);
    const url = this.host.spec().webhook_url;
    if (!hook || hook.state !== "pending" || !url) return this.drop("webhook");
    const body = hook.body ?? JSON.stringify(await this.webhookPayload());
    const firstAttemptAt = hook.first_attempt_at ?? Date.now();
    const outcome = await sendWebhook(url, hook.message_id, body, this.host.env.WEBHOOK_SECRET);
    if (!this.host.hasJob()) return;
    const now = Date.now();
    const status = "status" in outcome ? outcome.status : null;
    const state =
      status !== null && status >= 200 && status < 300
        ? "delivered"
        : status === 410
          ? "stopped"
          : now - firstAttemptAt >= this.host.limits.webhookRetryWindowMs
            ? "failed"
            : "pending";
    const attempts = hook.attempts + 1;
    this.host.storage.transactionSync(() => {
      this.sql.exec(
        "UPDATE webhook SET state = ?, attempts = ?, last_status = ?, last_error = ?, last_attempt_at = ?, first_attempt_at = ?, body = ? WHERE id = 1",
        state,
        attempts,
        status,
        "error" in outcome ? outcome.error : null,
        now,
        firstAttemptAt,
        body,
      );
      if (state !== "pending") return this.drop("webhook");
      const next = now + retryDelay(attempts, this.host.limits.webhookRetryBaseMs);
      this.sql.exec("UPDATE outbox SET due_at = ?, attempts = ? WHERE kind = 'webhook'", next, attempts);
    });
  }

  /** The contract's webhook body: the result inline when the job succeeded, else null. */
  private async webhookPayload() {
    const job = this.host.currentJob()!;
    const result =
      job.status === "succeeded"
        ? await inlineResult(this.host.env.OUTPUTS, this.host.finishedParts(), this.host.limits.inlineResultBytes)
        : null;
    return {
      job_id: job.job_id,
      status: job.status,
      result,
      error: job.error,
      completed_at: job.completed_at,
      duration_seconds: durationSeconds(job),
    };
  }
}
