/**
 * One Durable Object per job, named `<tenant>/<job_id>`. It holds the job row, its steps, an
 * append-only event log and an outbox, and serialises every transition of the job. One alarm
 * drives all background work: the next step, the outbox, the purge after delete, expiry.
 */
import { DurableObject } from "cloudflare:workers";
import { limits, type Limits } from "../config";
import { fail, type Result } from "../errors";
import type { Job } from "../schemas";
import { inlineResult, outputPrefix, partKey, purgePrefix, readText, writePart, type OutputPart, type WrittenPart } from "../storage/blobs";
import { hasTable, migrate } from "../storage/migrations";
import { runnerFor } from "../runners";
import { StepFailed, TimedOut, TransientError } from "../runners/types";
import { OutputCoalescer, Watchers, type LogTail, type NewEvent } from "./events";
import { durationSeconds, initialRow, toJob, type RunRow, type RunSpec } from "./job";
import { isTerminal, transition, type Action } from "./transitions";
import { eventsAfter, insertEvents, insertSpec, readRunRow, readSpec, readWebhook, RUN_MIGRATIONS, writeRunRow } from "./store";
import { retryDelay, sendWebhook } from "../webhooks/delivery";
import { newJobId } from "../ids";

/** A job waiting for a run slot checks again this often, in case a wake-up was lost. */
const SLOT_RECHECK_MS = 60_000;
/** While a step runs, the alarm is kept this far ahead so that a lost instance is resumed. */
const STEP_LEASE_MS = 60_000;
/** Why a step's AbortController was aborted when the step stopped reporting. */
class Stalled extends Error {}

/** An output event carries a step's text when it is at most this long; larger output is only in R2. */
const OUTPUT_EVENT_BYTES = 16 * 1024;

const notFound = () => fail("not_found", "Job not found");

type StepRow = {
  idx: number;
  name: string;
  status: "pending" | "running" | "done";
  attempts: number;
  last_error: string | null;
};

type StepOutcome =
  | { kind: "written"; part: WrittenPart; streamed: boolean }
  | { kind: "failed"; message: string }
  | { kind: "timed_out" }
  | { kind: "aborted" }
  | { kind: "error"; message: string; retryAfterMs?: number };

export class RunObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly limits: Limits;
  /** False for an object that holds no job: nothing may write to it but `create`. */
  private hasSchema: boolean;
  private inflight: { controller: AbortController; done: Promise<void> } | null = null;
  private readonly watchers = new Watchers((after) => this.logAfter(after));

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.limits = limits(env);
    this.hasSchema = hasTable(this.sql, "run");
    if (this.hasSchema) {
      void ctx.blockConcurrencyWhile(async () => {
        migrate(ctx.storage, RUN_MIGRATIONS);
        // Work left behind (an outbox row, a step, a purge) is scheduled again: after a restart the
        // stored alarm may be lost, or known to storage but not to the scheduler.
        await this.armAlarm();
      });
    }
  }

  // ---- RPC ----------------------------------------------------------------------------

  async create(spec: RunSpec): Promise<Result<{ job: Job }>> {
    if (this.hasSchema) return fail("internal", "Job already exists");
    migrate(this.ctx.storage, RUN_MIGRATIONS);
    this.hasSchema = true;
    const row = initialRow(spec);
    this.ctx.storage.transactionSync(() => {
      insertSpec(this.sql, spec);
      this.writeRow(row);
      this.appendEvents([
        { type: "progress", data: { percentage: 0, current_step: null } },
        { type: "log", data: { message: "Job queued" } },
      ]);
    });
    await this.armAlarm();
    return { ok: true, job: toJob(spec, row) };
  }

  get(): Result<{ job: Job }> {
    const row = this.liveRow();
    return row ? { ok: true, job: this.job(row) } : notFound();
  }

  async cancel(): Promise<Result<{ job: Job }>> {
    const row = this.liveRow();
    if (!row) return notFound();
    if (!transition(row.status, "cancel")) {
      return fail("invalid_state", `Cannot cancel job with status: ${row.status}`);
    }
    const next = this.commitCancel(row);
    await this.stopInflight("cancelled");
    await this.afterCommit();
    return { ok: true, job: this.job(next) };
  }

  async delete(force: boolean): Promise<Result<object>> {
    let row = this.liveRow();
    if (!row) return notFound();
    if (!isTerminal(row.status)) {
      if (!force) return fail("invalid_state", "Cannot delete running job. Cancel it first.");
      row = this.commitCancel(row);
    }
    this.markDeleted(row);
    await this.stopInflight("deleted");
    return this.purge();
  }

  /** The job and its finished output parts, in order: what /result and /output serve. */
  output(): Result<{ job: Job; parts: OutputPart[] }> {
    const row = this.liveRow();
    if (!row) return notFound();
    return { ok: true, job: this.job(row), parts: this.finishedParts() };
  }

  /** An SSE stream of the events after `after`, live until the job ends (then `[DONE]`). */
  stream(after: number): Result<{ body: ReadableStream<Uint8Array> }> {
    if (!this.liveRow()) return notFound();
    return { ok: true, body: this.watchers.open(after) };
  }

  /** A run slot is free: a queued job tries to start now. */
  async wake(): Promise<void> {
    const row = this.liveRow();
    if (row?.status !== "queued") return;
    this.writeRow({ ...row, next_step_at: Date.now() });
    await this.armAlarm();
  }

  // ---- background work ------------------------------------------------------------------

  /**
   * The platform retries a failing alarm only a few times, so the alarm never fails: whatever
   * went wrong, it schedules itself again a little later.
   */
  async alarm(): Promise<void> {
    try {
      await this.runDueWork();
    } catch (error) {
      console.error("alarm failed; trying again later", error);
      if (this.hasSchema) await this.ctx.storage.setAlarm(Date.now() + this.limits.retryBaseMs + this.limits.alarmDelayMs);
    }
  }

  private async runDueWork(): Promise<void> {
    const row = this.readRow();
    if (!row) return;
    if (row.deleted_at !== null) {
      await this.purge();
      return;
    }
    if (this.inflight) {
      // A step is running in this very instance; the alarm only keeps its lease.
      await this.armAlarm();
      return;
    }
    if (this.stepDue(row)) {
      await this.runNextStep(row);
      this.watchers.notify();
    }
    await this.drainOutbox();
    const after = this.readRow();
    if (!after) return;
    if (after.deleted_at !== null) {
      await this.purge();
      return;
    }
    if (isTerminal(after.status) && after.expires_at !== null && after.expires_at <= Date.now()) {
      this.markDeleted(after);
      await this.purge();
      return;
    }
    await this.armAlarm();
  }

  /** Work is due at its time, at the deadline, or at once when a step's instance was lost. */
  private stepDue(row: RunRow): boolean {
    if (isTerminal(row.status)) return false;
    const now = Date.now();
    if ((row.next_step_at ?? Infinity) <= now || (row.deadline_at ?? Infinity) <= now) return true;
    return this.sql.exec("SELECT 1 FROM steps WHERE status = 'running'").toArray().length > 0;
  }

  private async runNextStep(start: RunRow): Promise<void> {
    let row = start;
    const now = Date.now();
    if (row.status === "queued") {
      const granted = await this.index().acquire(this.spec().job_id, this.limits.maxRunningPerTenant);
      const current = this.liveRow();
      if (!current || current.status !== "queued") return; // cancelled or deleted meanwhile; its end frees the slot
      if (!granted) {
        this.writeRow({ ...current, next_step_at: Date.now() + SLOT_RECHECK_MS });
        return;
      }
      const started = Date.now();
      row = this.commit(current, { started_at: started, deadline_at: started + this.spec().timeout_s * 1000 }, [
        { type: "log", data: { message: "Job started" } },
      ], "start");
    }
    if (row.deadline_at !== null && now >= row.deadline_at) return this.failJob(row, this.timeoutMessage());

    const step = this.sql
      .exec<StepRow>("SELECT idx, name, status, attempts, last_error FROM steps WHERE status != 'done' ORDER BY idx LIMIT 1")
      .toArray()[0];
    if (!step) {
      this.commit(row, { current_step: null }, [], "succeed");
      return;
    }
    if (step.attempts >= this.limits.maxStepAttempts) {
      const cause = step.last_error ?? "it was interrupted";
      return this.failJob(row, `Step ${step.name} failed after ${step.attempts} attempts: ${cause}`);
    }

    this.ctx.storage.transactionSync(() => {
      this.sql.exec("UPDATE steps SET status = 'running', attempts = attempts + 1, started_at = ? WHERE idx = ?", now, step.idx);
      row = this.commit(row, { current_step: step.name, next_step_at: now + STEP_LEASE_MS }, [
        { type: "progress", data: { percentage: this.percentage(row), current_step: step.name } },
      ]);
    });
    await this.armAlarm();
    this.watchers.notify();

    const outcome = await this.executeStep(step, row);
    const current = this.liveRow();
    if (!current || current.status !== "running") return; // cancelled or deleted meanwhile: write nothing
    this.settleStep(current, step, outcome);
  }

  /** Runs one step with an AbortController that cancel, delete and the timeout abort. */
  private async executeStep(step: StepRow, row: RunRow): Promise<StepOutcome> {
    const spec = this.spec();
    const controller = new AbortController();
    let settle!: () => void;
    this.inflight = { controller, done: new Promise<void>((resolve) => (settle = resolve)) };
    const deadline = row.deadline_at;
    const timer = deadline === null ? undefined : setTimeout(() => controller.abort(new TimedOut()), Math.max(0, deadline - Date.now()));
    // A step that reports nothing (no output) for stallTimeoutMs is stopped and retried.
    const stallMs = this.limits.stallTimeoutMs;
    let watchdog = setTimeout(() => controller.abort(new Stalled()), stallMs);
    const reported = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(new Stalled()), stallMs);
    };
    const key = partKey(outputPrefix(spec.tenant, spec.job_id), step.idx);
    // Output text arrives as the runner produces it; it goes to the log coalesced, and only while the job runs.
    const deltas = new OutputCoalescer((delta) => {
      if (controller.signal.aborted || this.liveRow()?.status !== "running") return;
      this.appendEvents([{ type: "output", data: { delta } }]);
      this.watchers.notify();
    });
    let outcome: StepOutcome;
    try {
      const output = await runnerFor(this.env, spec.runner).runStep({
        prompt: spec.prompt,
        index: step.idx,
        total: row.steps_total,
        task: step.name,
        agentTask: spec.agent[step.idx - 1],
        context: spec.runner === "openai" ? await this.earlierOutputs() : [],
        config: spec.config,
        signal: controller.signal,
        onDelta: (text) => {
          reported();
          deltas.add(text);
        },
      });
      deltas.flush();
      outcome = { kind: "written", part: await writePart(this.env.OUTPUTS, key, output), streamed: output.streamed === true };
      if (controller.signal.aborted) {
        // The part landed after a cancel or delete: it is not the job's output.
        await this.env.OUTPUTS.delete(key);
        outcome = { kind: "aborted" };
      }
    } catch (error) {
      // An aborted upload may still have landed whole: it is not the job's output either.
      if (controller.signal.aborted) await this.env.OUTPUTS.delete(key).catch(() => {});
      const reason = controller.signal.reason;
      if (reason instanceof Stalled) outcome = { kind: "error", message: `Step ${step.name} made no progress for ${stallMs} ms` };
      else if (controller.signal.aborted) outcome = reason instanceof TimedOut ? { kind: "timed_out" } : { kind: "aborted" };
      else if (error instanceof StepFailed) outcome = { kind: "failed", message: error.message };
      else {
        const message = error instanceof Error ? error.message : String(error);
        outcome = { kind: "error", message, retryAfterMs: error instanceof TransientError ? error.retryAfterMs : undefined };
      }
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      clearTimeout(watchdog);
      deltas.close();
    }
    this.inflight = null;
    settle();
    return outcome;
  }

  private settleStep(row: RunRow, step: StepRow, outcome: StepOutcome): void {
    switch (outcome.kind) {
      case "written": {
        const { part } = outcome;
        const done = row.steps_completed + 1;
        const events: NewEvent[] = [];
        if (outcome.streamed) {
          // Its text already went out as output events while it was produced.
        } else if (part.bytes <= OUTPUT_EVENT_BYTES) {
          events.push({ type: "output", data: { delta: new TextDecoder().decode(part.head) } });
        } else {
          events.push({ type: "log", data: { message: `Step ${step.name} wrote ${part.bytes} bytes of output` } });
        }
        const percentage = Math.floor((100 * done) / row.steps_total);
        events.push({ type: "progress", data: { percentage, current_step: step.name } });
        this.ctx.storage.transactionSync(() => {
          this.sql.exec(
            "UPDATE steps SET status = 'done', finished_at = ?, output_key = ?, output_bytes = ?, output_etag = ? WHERE idx = ?",
            Date.now(),
            part.key,
            part.bytes,
            part.etag,
            step.idx,
          );
          const next = this.commit(row, { steps_completed: done, next_step_at: Date.now() }, events);
          if (done >= row.steps_total) this.commit(next, { current_step: null }, [], "succeed");
        });
        return;
      }
      case "failed":
        return this.failJob(row, outcome.message);
      case "timed_out":
        return this.failJob(row, this.timeoutMessage());
      case "aborted":
        return;
      case "error": {
        // An infrastructure error (R2, the runner's transport): retried, a bounded number of times.
        const attempt = step.attempts + 1;
        if (attempt >= this.limits.maxStepAttempts) {
          return this.failJob(row, `Step ${step.name} failed after ${attempt} attempts: ${outcome.message}`);
        }
        const backoff = Math.min(60_000, this.limits.retryBaseMs * 2 ** step.attempts);
        const retryAt = Date.now() + Math.max(backoff, outcome.retryAfterMs ?? 0);
        this.ctx.storage.transactionSync(() => {
          this.sql.exec("UPDATE steps SET status = 'pending', last_error = ? WHERE idx = ?", outcome.message, step.idx);
          this.commit(row, { next_step_at: retryAt }, [
            { type: "log", data: { message: `Step ${step.name} failed, will retry: ${outcome.message}` } },
          ]);
        });
      }
    }
  }

  /** What the finished steps produced, for the next task's context. */
  private async earlierOutputs(): Promise<{ task: string; output: string }[]> {
    return Promise.all(this.finishedParts().map(async (part) => ({ task: part.name, output: await readText(this.env.OUTPUTS, [part]) })));
  }

  /** The output of every finished step, in order, with the step's name. */
  private finishedParts(): (OutputPart & { name: string })[] {
    return this.sql
      .exec<{ name: string; key: string; bytes: number; etag: string }>(
        "SELECT name, output_key AS key, output_bytes AS bytes, output_etag AS etag FROM steps WHERE status = 'done' ORDER BY idx",
      )
      .toArray();
  }

  private failJob(row: RunRow, message: string): void {
    this.commit(row, { error: message, current_step: null }, [{ type: "log", data: { message } }], "fail");
  }

  private timeoutMessage(): string {
    return `Job timed out after ${this.spec().timeout_s} seconds`;
  }

  private percentage(row: RunRow): number {
    return row.steps_total > 0 ? Math.floor((100 * row.steps_completed) / row.steps_total) : 0;
  }

  // ---- transitions and the outbox ------------------------------------------------------------

  /**
   * Writes the row change, its events and the index outbox row in one transaction. With an
   * action, the status change is the transition table's and a terminal one records `complete`.
   */
  private commit(row: RunRow, patch: Partial<RunRow>, events: NewEvent[], action?: Action): RunRow {
    const next: RunRow = { ...row, ...patch, version: row.version + 1 };
    const all = [...events];
    if (action) {
      const to = transition(row.status, action);
      if (!to) throw new Error(`transition ${action} from ${row.status} is not in the table`);
      next.status = to;
      if (isTerminal(to)) {
        const now = Date.now();
        next.completed_at = now;
        if (to === "cancelled") next.cancelled_at = now;
        next.next_step_at = null;
        next.expires_at = now + (this.spec().retention_ms ?? this.limits.retentionMs);
        all.push({ type: "complete", data: { status: to, job_id: this.spec().job_id } });
      }
    }
    this.ctx.storage.transactionSync(() => {
      this.writeRow(next);
      this.appendEvents(all);
      if (action && isTerminal(next.status) && this.spec().webhook_url) {
        this.sql.exec("INSERT INTO webhook (id, message_id, state) VALUES (1, ?, 'pending')", `msg_${newJobId().slice(4)}`);
        this.enqueue("webhook", {}, Date.now());
      }
      this.enqueue("index", { job: this.job(next), version: next.version }, Date.now());
    });
    return next;
  }

  private commitCancel(row: RunRow): RunRow {
    return this.commit(row, { current_step: null }, [
      { type: "log", data: { message: "Job cancelled" } },
    ], "cancel");
  }

  /** From here on the job answers 404; the purge outbox row finishes the rest. */
  private markDeleted(row: RunRow): void {
    this.ctx.storage.transactionSync(() => {
      this.writeRow({ ...row, deleted_at: Date.now(), version: row.version + 1 });
      this.sql.exec("DELETE FROM outbox WHERE kind = 'index'");
      this.enqueue("purge", {}, Date.now());
    });
    // Watchers hear what was logged up to here (a forced cancel's `complete`), then their streams end.
    this.watchers.notify();
    this.watchers.closeAll();
  }

  private async stopInflight(reason: string): Promise<void> {
    const inflight = this.inflight;
    if (!inflight) return;
    inflight.controller.abort(new Error(reason));
    await inflight.done;
  }

  private async afterCommit(): Promise<void> {
    this.watchers.notify();
    await this.drainOutbox();
    await this.armAlarm();
  }

  private enqueue(kind: string, payload: object, dueAt: number): void {
    this.sql.exec(
      "INSERT INTO outbox (kind, payload, due_at, attempts) VALUES (?, ?, ?, 0) ON CONFLICT (kind) DO UPDATE SET payload = excluded.payload, due_at = excluded.due_at, attempts = 0",
      kind,
      JSON.stringify(payload),
      dueAt,
    );
  }

  /** Delivers due outbox rows; a failed delivery is retried later with backoff. Idempotent. */
  private async drainOutbox(): Promise<void> {
    if (!this.hasSchema) return;
    const rows = this.sql
      .exec<{ kind: string; payload: string; attempts: number }>(
        "SELECT kind, payload, attempts FROM outbox WHERE kind != 'purge' AND due_at <= ?",
        Date.now(),
      )
      .toArray();
    for (const row of rows) {
      if (row.kind === "webhook") {
        await this.deliverWebhook();
        if (!this.hasSchema) return;
        continue;
      }
      try {
        await this.deliver(row.kind, JSON.parse(row.payload));
        if (!this.hasSchema) return;
        // A newer payload may have been queued while this one was in flight: keep it.
        this.sql.exec("DELETE FROM outbox WHERE kind = ? AND payload = ?", row.kind, row.payload);
      } catch {
        if (!this.hasSchema) return;
        this.retryLater(row.kind, row.payload);
      }
    }
  }

  private retryLater(kind: string, payload?: string): void {
    this.sql.exec(
      "UPDATE outbox SET attempts = attempts + 1, due_at = ? + MIN(300000, 1000 * (1 << MIN(attempts, 16))) WHERE kind = ? AND (? IS NULL OR payload = ?)",
      Date.now(),
      kind,
      payload ?? null,
      payload ?? null,
    );
  }

  private async deliver(kind: string, payload: { job: Job; version: number }): Promise<void> {
    if (kind === "index") await this.index().upsert(payload.job, payload.version, this.limits.maxRunningPerTenant);
  }

  /**
   * One attempt to deliver the terminal-state webhook. The body is fixed at the first attempt
   * and the message id never changes, so a receiver can deduplicate retries. 2xx ends it, 410
   * stops it, anything else is retried with backoff until the retry window has passed.
   */
  private async deliverWebhook(): Promise<void> {
    const hook = readWebhook(this.sql);
    const spec = this.spec();
    if (!hook || hook.state !== "pending" || !spec.webhook_url) {
      this.sql.exec("DELETE FROM outbox WHERE kind = 'webhook'");
      return;
    }
    const body = hook.body ?? JSON.stringify(await this.webhookPayload());
    const firstAttemptAt = hook.first_attempt_at ?? Date.now();
    const outcome = await sendWebhook(spec.webhook_url, hook.message_id, body, this.env.WEBHOOK_SECRET);
    if (!this.hasSchema) return;
    const now = Date.now();
    const status = "status" in outcome ? outcome.status : null;
    const state =
      status !== null && status >= 200 && status < 300
        ? "delivered"
        : status === 410
          ? "stopped"
          : now - firstAttemptAt >= this.limits.webhookRetryWindowMs
            ? "failed"
            : "pending";
    const attempts = hook.attempts + 1;
    this.ctx.storage.transactionSync(() => {
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
      if (state === "pending") {
        this.sql.exec("UPDATE outbox SET due_at = ?, attempts = ? WHERE kind = 'webhook'", now + retryDelay(attempts, this.limits.webhookRetryBaseMs), attempts);
      } else {
        this.sql.exec("DELETE FROM outbox WHERE kind = 'webhook'");
      }
    });
  }

  /** The contract's webhook body: the result inline when the job succeeded, else null. */
  private async webhookPayload() {
    const row = this.readRow()!;
    const job = this.job(row);
    const result =
      job.status === "succeeded" ? await inlineResult(this.env.OUTPUTS, this.finishedParts(), this.limits.inlineResultBytes) : null;
    return {
      job_id: job.job_id,
      status: job.status,
      result,
      error: job.error,
      completed_at: job.completed_at,
      duration_seconds: durationSeconds(job),
    };
  }

  /** Deletion's last leg, in order: R2 under the job's prefix, the index row and key, then storage. */
  private async purge(): Promise<Result<object>> {
    const spec = this.spec();
    try {
      await purgePrefix(this.env.OUTPUTS, outputPrefix(spec.tenant, spec.job_id));
      await this.index().remove(spec.job_id, this.limits.maxRunningPerTenant);
    } catch (error) {
      if (this.hasSchema) {
        this.retryLater("purge");
        await this.armAlarm();
      }
      const message = error instanceof Error ? error.message : String(error);
      return fail("purge_failed", `Job deleted, but purging its data failed and will be retried: ${message}`);
    }
    if (this.hasSchema) {
      this.hasSchema = false;
      await this.ctx.storage.deleteAlarm();
      await this.ctx.storage.deleteAll();
    }
    return { ok: true };
  }

  /** One alarm for all due work: the earliest of the next step, the outbox, and expiry. */
  private async armAlarm(): Promise<void> {
    const row = this.readRow();
    if (!row) return;
    const times: number[] = [];
    const outbox = this.sql.exec<{ due: number | null }>("SELECT MIN(due_at) AS due FROM outbox").one().due;
    if (outbox !== null) times.push(outbox);
    if (row.deleted_at === null) {
      if (isTerminal(row.status)) {
        if (row.expires_at !== null) times.push(row.expires_at);
      } else {
        if (row.next_step_at !== null) times.push(row.next_step_at);
        if (row.deadline_at !== null) times.push(row.deadline_at);
      }
    }
    if (times.length === 0) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(Math.min(...times) + this.limits.alarmDelayMs);
  }

  // ---- storage --------------------------------------------------------------------------

  private readRow(): RunRow | null {
    return this.hasSchema ? readRunRow(this.sql) : null;
  }

  /** The row of a job that exists and is not being deleted. */
  private liveRow(): RunRow | null {
    const row = this.readRow();
    return row && row.deleted_at === null ? row : null;
  }

  private specCache: RunSpec | null = null;
  private spec(): RunSpec {
    this.specCache ??= readSpec(this.sql);
    return this.specCache;
  }

  private writeRow(row: RunRow): void {
    writeRunRow(this.sql, row);
  }

  private appendEvents(events: NewEvent[]): void {
    insertEvents(this.sql, events);
  }

  private logAfter(after: number): LogTail {
    const row = this.readRow();
    if (!row) return { events: [], finished: true };
    return { events: eventsAfter(this.sql, after), finished: isTerminal(row.status) };
  }

  private job(row: RunRow): Job {
    return toJob(this.spec(), row, this.hasSchema ? readWebhook(this.sql) : null);
  }

  private index() {
    return this.env.TENANTS.getByName(this.spec().tenant);
  }
}
