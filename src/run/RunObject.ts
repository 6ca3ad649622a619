/**
 * One Durable Object per job, named `<tenant>/<job_id>`. It holds the job row, its steps, an
 * append-only event log and an outbox, and serialises every transition of the job. A request
 * does its own state change and answers; one alarm drives all background work: the outbox (what
 * the job owes its tenant's line and projection, its webhook, a purge), the next step, expiry.
 * The tenant's line starts a queued job (`start`) and expires one (`expire`).
 */
import { DurableObject } from "cloudflare:workers";
import { limits, type Limits } from "../config";
import { fail, jobNotFound, type Result } from "../errors";
import type { InputBody, Job } from "../schemas";
import { newId } from "../ids";
import { logFailure } from "../log";
import type { StartAnswer } from "../tenant/TenantLine";
import { inlineResult, readText, type OutputPart } from "../storage/blobs";
import { hasTable, migrate } from "../storage/migrations";
import { Watchers, type LogTail, type NamedResult, type NewEvent, type StreamFormat } from "./events";
import { executeStep, type StepOutcome } from "./execute";
import { asksForInput } from "../runners";
import type { CallUsage, Revision, StepContext } from "../runners/types";
import { initialRow, inputRequest, placeRequest, stepPercentage, storedInputRequest, tenantObjects, toJob, usageOf, type CopiedStep, type RunRow, type RunSpec, type StoredInputRequest } from "./job";
import { Outbox, owesWebhook, webhookBody } from "./outbox";
import { recordTransition } from "./telemetry";
import { eventsAfter, finishedParts, type FinishedPart, insertEvents, insertSpec, readRunRow, readSpec, readWebhook, RUN_MIGRATIONS, RUN_SCHEMA, writeRunRow } from "./store";
import { isTerminal, transition, type Action } from "./transitions";

/** While a step runs, the alarm is kept this far ahead so that a lost instance is resumed. */
const STEP_LEASE_MS = 60_000;
/** An output event carries a step's text when it is at most this long; larger output is only in R2. */
const OUTPUT_EVENT_BYTES = 16 * 1024;
/** The named stream's `result` carries the output inline up to this size. */
const NAMED_RESULT_BYTES = 16 * 1024;
/** A request for input quotes at most this much of the step's answer. */
const INPUT_OUTPUT_BYTES = 16 * 1024;

type StepRow = {
  idx: number;
  name: string;
  status: "pending" | "running" | "done";
  attempts: number;
  last_error: string | null;
  /** The revision a person asked for (JSON of Revision), when the step runs again. */
  revision: string | null;
};

export class RunObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly limits: Limits;
  /** False for an object that holds no job: nothing may write to it but `create`. */
  private hasJob: boolean;
  private inflight: { controller: AbortController; done: Promise<void> } | null = null;
  private readonly watchers = new Watchers((after) => this.logAfter(after));
  private readonly outbox: Outbox;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.limits = limits(env);
    this.outbox = new Outbox(ctx);
    this.hasJob = hasTable(this.sql, "run");
    if (this.hasJob) {
      void ctx.blockConcurrencyWhile(async () => {
        migrate(ctx.storage, RUN_MIGRATIONS);
        // Work left behind (an outbox row, a step, a purge) is scheduled again: after a restart the
        // stored alarm may be lost, or known to storage but not to the scheduler.
        await this.armAlarm();
      });
    }
  }

  // ---- RPC ----------------------------------------------------------------------------

  /**
   * Stores a new job. `granted`: the tenant's line gave it a run slot at submit, so it starts at
   * once; otherwise it waits, with no alarm, until the line tells it (`start`). The submit that
   * creates it registers it with the projection, so no snapshot is owed yet.
   */
  async create(spec: RunSpec, granted: boolean, copied: CopiedStep[] = []): Promise<Result<{ job: Job; version: number }>> {
    if (this.hasJob) return fail("internal", "Job already exists");
    migrate(this.ctx.storage, RUN_MIGRATIONS, RUN_SCHEMA);
    this.hasJob = true;
    let row: RunRow = { ...initialRow(spec), steps_completed: copied.length };
    this.transaction(() => {
      insertSpec(this.sql, spec, copied);
      this.writeRow(row);
      this.appendEvents([
        { type: "progress", data: { percentage: stepPercentage(copied.length, row.steps_total), step: null, current_step: null } },
        { type: "log", data: { message: "Job queued", status: "queued" } },
        ...(copied.length > 0
          ? [{ type: "log" as const, data: { message: `Retry of ${spec.retry_of}: the output of steps 1 to ${copied.length} was copied, not run again` } }]
          : []),
      ]);
      if (granted) row = this.commitStart(row);
      this.outbox.drop("projection");
    });
    await this.armAlarm();
    return { ok: true, job: this.job(row), version: row.version };
  }

  get(): Result<{ job: Job }> {
    const row = this.liveRow();
    return row ? { ok: true, job: this.job(row) } : this.notFound();
  }

  /** Persists `cancelled` first, then stops the step in flight; what it owes others goes out later. */
  async cancel(): Promise<Result<{ job: Job }>> {
    const row = this.liveRow();
    if (!row) return this.notFound();
    if (!transition(row.status, "cancel")) {
      return fail("invalid_state", `Cannot cancel job with status: ${row.status}`);
    }
    const next = this.commitCancel(row);
    await this.stopInflight("cancelled");
    this.watchers.notify();
    await this.armAlarm();
    return { ok: true, job: this.job(next) };
  }

  /**
   * The job answers 404 from here on. The purge (R2, its projection row and key, its place in
   * line) runs now, as the contract's DELETE requires; a webhook still owed is kept until it is
   * delivered or given up, then the object removes itself.
   */
  async delete(force: boolean): Promise<Result<object>> {
    let row = this.liveRow();
    if (!row) return this.notFound();
    if (!isTerminal(row.status)) {
      if (!force) return fail("invalid_state", "Cannot delete running job. Cancel it first.");
      row = this.commitCancel(row);
    }
    this.markDeleted(row);
    await this.stopInflight("deleted");
    return this.finishDeletion();
  }

  /** Removes a job that its submit could not register (another job holds its idempotency key). */
  async discard(): Promise<void> {
    const row = this.liveRow();
    if (!row) return;
    this.transaction(() => {
      this.sql.exec("DELETE FROM webhook");
      this.outbox.drop("webhook");
      this.outbox.enqueue("line", this.jobRef(), Date.now());
    });
    this.markDeleted(row);
    await this.stopInflight("deleted");
    await this.finishDeletion();
  }

  /**
   * What a retry of this job starts from: its spec and its finished steps' outputs. Only a failed
   * or cancelled job can be retried.
   */
  retrySource(): Result<{ spec: RunSpec; parts: FinishedPart[] }> {
    const row = this.liveRow();
    if (!row) return this.notFound();
    if (row.status !== "failed" && row.status !== "cancelled") return fail("invalid_state", "Only failed or cancelled jobs can be retried");
    return { ok: true, spec: this.spec(), parts: finishedParts(this.sql) };
  }

  /** The job and its finished output parts, in order: what /result and /output serve. */
  output(): Result<{ job: Job; parts: OutputPart[] }> {
    const row = this.liveRow();
    if (!row) return this.notFound();
    return { ok: true, job: this.job(row), parts: finishedParts(this.sql) };
  }

  /**
   * An SSE stream of the events after `after`, live until the job ends: in PraisonAI's format
   * (then `[DONE]`), or with `named` in the named format (then the job's `result`).
   */
  stream(after: number, named?: { resultUrl: string }): Result<{ body: ReadableStream<Uint8Array> }> {
    if (!this.liveRow()) return this.notFound();
    const format: StreamFormat = named ? { kind: "named", jobId: this.spec().job_id, result: () => this.namedResult(named.resultUrl) } : { kind: "default" };
    return { ok: true, body: this.watchers.open(after, format) };
  }

  /** The named stream's last event: the result inline when the job succeeded with at most 16 KiB. */
  private async namedResult(resultUrl: string): Promise<NamedResult> {
    const row = this.readRow();
    const status = row?.status ?? "cancelled";
    const result = status === "succeeded" ? await inlineResult(this.env.OUTPUTS, finishedParts(this.sql), NAMED_RESULT_BYTES) : null;
    return { status, result, result_url: resultUrl, error: row?.error ?? null };
  }

  /**
   * A person's answer to the job's request for input. Approve keeps the step's answer (the input
   * is a note for the next tasks), revise runs the step again with the input as feedback, reject
   * fails the job. An answered job waits for a run slot again, ahead of jobs not yet started.
   * The answer is committed before anything is awaited, so of two racing answers one wins.
   */
  async input(answer: InputBody): Promise<Result<{ job: Job }>> {
    const row = this.liveRow();
    if (!row) return this.notFound();
    const request = storedInputRequest(row);
    if (row.status !== "awaiting_input" || !request) {
      return fail("conflict", `Job is not awaiting input. Current status: ${row.status}`);
    }
    const text = answer.input ?? "";
    let next: RunRow;
    if (answer.action === "reject") {
      next = this.failJob(row, `Rejected at step ${request.step}: ${text}`);
    } else if (answer.action === "approve") {
      next = this.transaction(() => {
        this.sql.exec("UPDATE steps SET note = ? WHERE idx = ?", text === "" ? null : text, request.step_index);
        return this.commit(row, { current_step: null }, [{ type: "log", data: { message: `Input approved at step ${request.step}`, status: "queued" } }], "answer");
      });
    } else {
      const revision: Revision = { feedback: text, answer: request.output };
      next = this.transaction(() => {
        this.sql.exec(
          "UPDATE steps SET status = 'pending', attempts = 0, last_error = NULL, output_key = NULL, output_bytes = NULL, output_etag = NULL, revision = ? WHERE idx = ?",
          JSON.stringify(revision),
          request.step_index,
        );
        const completed = row.steps_completed - 1;
        return this.commit(row, { steps_completed: completed, current_step: null }, [
          { type: "log", data: { message: `Step ${request.step} will run again with the feedback given`, status: "queued" } },
          { type: "progress", data: { percentage: stepPercentage(completed, row.steps_total), step: null, current_step: null } },
        ], "answer");
      });
    }
    await this.armAlarm();
    this.watchers.notify();
    return { ok: true, job: this.job(next) };
  }

  // ---- what the tenant's line tells it ----------------------------------------------------

  /** The line granted this job a run slot: a queued job starts now. Idempotent. */
  async start(): Promise<StartAnswer> {
    const row = this.readRow();
    if (!row) return "missing";
    if (row.deleted_at !== null) return "not_waiting";
    if (row.status === "running") return "running";
    if (row.status !== "queued") return "not_waiting";
    this.commitStart(row);
    await this.armAlarm();
    this.watchers.notify();
    return "started";
  }

  /** The job's queue TTL passed before it started: a job still queued fails with `message`. */
  async expire(message: string): Promise<boolean> {
    const row = this.liveRow();
    if (row?.status !== "queued") return false;
    this.commit(row, { error: message, current_step: null }, [{ type: "log", data: { message } }], "expire");
    await this.armAlarm();
    this.watchers.notify();
    return true;
  }

  /** Whether this job still holds a run slot: asked by the line's audit. */
  holdsSlot(): boolean {
    return this.liveRow()?.status === "running";
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
      logFailure("the job's alarm failed; trying again later", error, { job_id: this.specCache?.job_id });
      if (this.hasJob) await this.ctx.storage.setAlarm(Date.now() + this.limits.retryBaseMs + this.limits.alarmDelayMs);
    }
  }

  private async runDueWork(): Promise<void> {
    const row = this.readRow();
    if (!row) return;
    if (row.deleted_at !== null) {
      await this.finishDeletion(true);
      return;
    }
    if (this.inflight) {
      // A step is running in this very instance; the alarm only keeps its lease.
      await this.armAlarm();
      return;
    }
    // What the last change owes goes out before the next step: the projection hears of a start
    // when it happens, not after the first step.
    await this.outbox.drain(this.env);
    const current = this.liveRow();
    const request = current && storedInputRequest(current);
    if (current && request && request.expires_at <= Date.now()) {
      this.failJob(current, `No input within ${this.spec().input_timeout_s} s at step ${request.step}`);
      this.watchers.notify();
      await this.outbox.drain(this.env);
    } else if (current && this.stepDue(current)) {
      await this.runNextStep(current);
      this.watchers.notify();
      await this.outbox.drain(this.env);
    }
    const after = this.readRow();
    if (!after) return;
    if (after.deleted_at !== null) {
      await this.finishDeletion(true);
      return;
    }
    if (isTerminal(after.status) && after.expires_at !== null && after.expires_at <= Date.now()) {
      this.markDeleted(after);
      await this.finishDeletion(true);
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
    if (row.status === "queued") {
      // Only the line starts a queued job (`start`); a time left from before it waited is void.
      this.writeRow({ ...row, next_step_at: null });
      return;
    }
    const now = Date.now();
    if (row.deadline_at !== null && now >= row.deadline_at) return void this.failJob(row, this.timeoutMessage());

    const step = this.sql
      .exec<StepRow>("SELECT idx, name, status, attempts, last_error, revision FROM steps WHERE status != 'done' ORDER BY idx LIMIT 1")
      .toArray()[0];
    if (!step) {
      this.commit(row, { current_step: null }, [], "succeed");
      return;
    }
    if (step.attempts >= this.limits.maxStepAttempts) {
      const cause = step.last_error ?? "it was interrupted";
      return void this.failJob(row, `Step ${step.name} failed after ${step.attempts} attempts: ${cause}`);
    }

    this.transaction(() => {
      this.sql.exec("UPDATE steps SET status = 'running', attempts = attempts + 1, started_at = ? WHERE idx = ?", now, step.idx);
      row = this.commit(row, { current_step: step.name, next_step_at: now + STEP_LEASE_MS }, [
        { type: "progress", data: { percentage: stepPercentage(row.steps_completed, row.steps_total), step: step.idx, current_step: step.name } },
      ]);
    });
    await this.armAlarm();
    this.watchers.notify();

    const outcome = await this.executeStep(step, row);
    const current = this.liveRow();
    if (!current || current.status !== "running") return; // cancelled or deleted meanwhile: write nothing
    this.settleStep(current, step, outcome);
  }

  /** Runs one step, with an AbortController that cancel and delete reach through `inflight`. */
  private async executeStep(step: StepRow, row: RunRow): Promise<StepOutcome> {
    const controller = new AbortController();
    let settle!: () => void;
    this.inflight = { controller, done: new Promise<void>((resolve) => (settle = resolve)) };
    try {
      return await executeStep({
        env: this.env,
        spec: this.spec(),
        step,
        total: row.steps_total,
        deadlineAt: row.deadline_at,
        stallMs: this.limits.stallTimeoutMs,
        controller,
        context: () => this.earlierOutputs(),
        revision: step.revision === null ? undefined : (JSON.parse(step.revision) as Revision),
        onOutput: (delta) => {
          if (controller.signal.aborted || this.liveRow()?.status !== "running") return;
          this.appendEvents([{ type: "output", data: { delta } }]);
          this.watchers.notify();
        },
        budget: this.budgetLeft(row),
        onUsage: (usage) => {
          // A call stopped by cancel or delete is not recorded: nothing is written after them.
          const current = this.liveRow();
          if (controller.signal.aborted || current?.status !== "running") return;
          this.recordUsage(current, step.idx, usage);
        },
      });
    } finally {
      this.inflight = null;
      settle();
    }
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
        events.push({ type: "progress", data: { percentage: stepPercentage(done, row.steps_total), step: step.idx, current_step: step.name } });
        const asks = asksForInput(this.spec(), step.idx);
        this.transaction(() => {
          this.sql.exec(
            "UPDATE steps SET status = 'done', finished_at = ?, output_key = ?, output_bytes = ?, output_etag = ? WHERE idx = ?",
            Date.now(),
            part.key,
            part.bytes,
            part.etag,
            step.idx,
          );
          const next = this.commit(row, { steps_completed: done, next_step_at: asks ? null : Date.now() }, events);
          if (asks) this.commitAsk(next, step, part.head);
          else if (done >= row.steps_total) this.commit(next, { current_step: null }, [], "succeed");
        });
        return;
      }
      case "failed":
        return void this.failJob(row, outcome.message);
      case "timed_out":
        return void this.failJob(row, this.timeoutMessage());
      case "aborted":
        return;
      case "error": {
        // An infrastructure error (R2, the runner's transport): retried, a bounded number of times.
        const attempt = step.attempts + 1;
        if (attempt >= this.limits.maxStepAttempts) {
          return void this.failJob(row, `Step ${step.name} failed after ${attempt} attempts: ${outcome.message}`);
        }
        const backoff = Math.min(60_000, this.limits.retryBaseMs * 2 ** step.attempts);
        const retryAt = Date.now() + Math.max(backoff, outcome.retryAfterMs ?? 0);
        this.transaction(() => {
          this.sql.exec("UPDATE steps SET status = 'pending', last_error = ? WHERE idx = ?", outcome.message, step.idx);
          this.commit(row, { next_step_at: retryAt }, [
            { type: "log", data: { message: `Step ${step.name} failed, will retry: ${outcome.message}` } },
          ]);
        });
      }
    }
  }

  /** Tokens the job may still spend under `config.max_total_tokens`, or null when it has no budget. */
  private budgetLeft(row: RunRow): number | null {
    const max = this.spec().config.max_total_tokens;
    return typeof max === "number" ? max - row.prompt_tokens - row.completion_tokens : null;
  }

  /** Adds one model call's usage to its step and to the job. */
  private recordUsage(row: RunRow, stepIndex: number, usage: CallUsage): void {
    this.transaction(() => {
      this.sql.exec(
        "UPDATE steps SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?, model_calls = model_calls + 1 WHERE idx = ?",
        usage.prompt_tokens,
        usage.completion_tokens,
        stepIndex,
      );
      this.commit(row, {
        prompt_tokens: row.prompt_tokens + usage.prompt_tokens,
        completion_tokens: row.completion_tokens + usage.completion_tokens,
        model_calls: row.model_calls + 1,
        estimated_calls: row.estimated_calls + (usage.estimated ? 1 : 0),
      }, []);
    });
  }

  /** What the finished steps produced, for the next task's context, with the notes people gave. */
  private async earlierOutputs(): Promise<StepContext[]> {
    return Promise.all(
      finishedParts(this.sql).map(async (part) => ({
        task: part.name,
        output: await readText(this.env.OUTPUTS, [part]),
        ...(part.note === null ? {} : { note: part.note }),
      })),
    );
  }

  private failJob(row: RunRow, message: string): RunRow {
    return this.commit(row, { error: message, current_step: null }, [{ type: "log", data: { message } }], "fail");
  }

  /**
   * The step's task asks a person for input on its answer: the job stops, frees its run slot
   * and stops its timeout's clock until the answer comes, or until `input_timeout_s` passes.
   */
  private commitAsk(row: RunRow, step: StepRow, answer: Uint8Array): RunRow {
    const now = Date.now();
    const request: StoredInputRequest = {
      step_index: step.idx,
      step: step.name,
      prompt: `Review the answer of step ${step.name}: approve it, revise it with feedback, or reject it.`,
      // A multi-byte character cut at the limit is left out, not mangled.
      output: new TextDecoder().decode(answer.subarray(0, INPUT_OUTPUT_BYTES), { stream: true }),
      requested_at: now,
      expires_at: now + this.spec().input_timeout_s * 1000,
    };
    const patch: Partial<RunRow> = {
      input_request: JSON.stringify(request),
      time_left_ms: row.deadline_at === null ? null : Math.max(0, row.deadline_at - now),
      deadline_at: null,
      next_step_at: null,
      current_step: step.name,
    };
    const shown = inputRequest({ ...row, ...patch });
    return this.commit(row, patch, [
      { type: "log", data: { message: `Awaiting input at step ${step.name}`, status: "awaiting_input" } },
      { type: "input_required", data: shown! },
    ], "ask");
  }

  private timeoutMessage(): string {
    return `Job timed out after ${this.spec().timeout_s} seconds`;
  }

  // ---- transitions and the outbox ------------------------------------------------------------

  /**
   * Writes the row change, its events and what it owes others (outbox rows) in one transaction.
   * With an action, the status change is the transition table's and a terminal one records
   * `complete`, leaves the tenant's line and owes the webhook.
   */
  private commit(row: RunRow, patch: Partial<RunRow>, events: NewEvent[], action?: Action): RunRow {
    const next: RunRow = { ...row, ...patch, version: row.version + 1 };
    const all = [...events];
    const spec = this.spec();
    if (action) {
      const to = transition(row.status, action);
      if (!to) throw new Error(`transition ${action} from ${row.status} is not in the table`);
      next.status = to;
      if (to !== "awaiting_input") next.input_request = null;
      if (isTerminal(to)) {
        const now = Date.now();
        next.completed_at = now;
        if (to === "cancelled") next.cancelled_at = now;
        next.next_step_at = null;
        next.expires_at = now + (spec.retention_ms ?? this.limits.retentionMs);
        all.push({ type: "complete", data: { status: to, job_id: spec.job_id, usage: usageOf(next) } });
      }
    }
    // Ending or stopping for a person leaves the line (and any run slot); an answer joins it again.
    const paused = action !== undefined && (isTerminal(next.status) || next.status === "awaiting_input");
    this.transaction(() => {
      this.writeRow(next);
      this.appendEvents(all);
      if (paused) {
        this.outbox.enqueue("line", this.jobRef(), Date.now());
        if (spec.webhook_url) {
          // A terminal body is fixed at its first attempt (it may quote the result); a pause's now.
          const body = isTerminal(next.status) ? null : webhookBody(this.job(next), null);
          owesWebhook(this.ctx, this.outbox, newId("msg"), body);
        }
      }
      if (action === "answer") {
        // Its delay and queue TTL were for its first start; an answered job may start at once.
        const place = { ...placeRequest(spec), start_at: null, ttl_s: null };
        this.outbox.enqueue("line", { ...this.jobRef(), rejoin: place, answered_at: Date.now() }, Date.now());
      }
      this.outbox.enqueueSnapshot({ ...this.jobRef(), job: this.job(next), version: next.version }, next.status !== row.status);
    });
    if (action) recordTransition(this.env, spec, row, next);
    return next;
  }

  /**
   * The job holds a run slot: it runs from now, its next step due at once. One answered by a
   * person resumes with the run time it had left.
   */
  private commitStart(row: RunRow): RunRow {
    const now = Date.now();
    const left = row.time_left_ms ?? this.spec().timeout_s * 1000;
    const resumed = row.started_at !== null;
    return this.commit(row, { started_at: row.started_at ?? now, deadline_at: now + left, time_left_ms: null, next_step_at: now }, [
      { type: "log", data: { message: resumed ? "Job resumed" : "Job started", status: "running" } },
    ], "start");
  }

  private commitCancel(row: RunRow): RunRow {
    return this.commit(row, { current_step: null }, [
      { type: "log", data: { message: "Job cancelled" } },
    ], "cancel");
  }

  /** From here on the job answers 404; the purge outbox row finishes the rest. */
  private markDeleted(row: RunRow): void {
    this.transaction(() => {
      this.writeRow({ ...row, deleted_at: Date.now(), version: row.version + 1 });
      this.outbox.drop("projection");
      this.outbox.enqueue("purge", this.jobRef(), Date.now());
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

  /**
   * Deletion's last leg: the purge (R2 under the job's prefix, then its projection row and key)
   * and its place in line, now; then storage, once nothing else is owed. A webhook still owed
   * is never awaited by a request: the alarm delivers it, then removes the object.
   */
  private async finishDeletion(inAlarm = false): Promise<Result<object>> {
    try {
      await this.outbox.drain(this.env, ["purge", "line"], "now");
      if (inAlarm) await this.outbox.drain(this.env, ["webhook"]);
    } catch (error) {
      if (this.hasJob) await this.armAlarm();
      const message = error instanceof Error ? error.message : String(error);
      return fail("purge_failed", `Job deleted, but purging its data failed and will be retried: ${message}`);
    }
    if (!this.hasJob || !hasTable(this.sql, "outbox")) return { ok: true };
    if (this.outbox.isEmpty()) {
      this.hasJob = false;
      this.rowCache = undefined;
      await this.ctx.storage.deleteAlarm();
      await this.ctx.storage.deleteAll();
    } else {
      await this.armAlarm();
    }
    return { ok: true };
  }

  /** One alarm for all due work: the earliest of the next step, the outbox, and expiry. */
  private async armAlarm(): Promise<void> {
    const row = this.readRow();
    if (!row) return;
    const times: number[] = [];
    const outbox = this.outbox.earliestDue();
    if (outbox !== null) times.push(outbox);
    if (row.deleted_at === null) {
      if (isTerminal(row.status)) {
        if (row.expires_at !== null) times.push(row.expires_at);
      } else {
        if (row.next_step_at !== null) times.push(row.next_step_at);
        if (row.deadline_at !== null) times.push(row.deadline_at);
        const request = storedInputRequest(row);
        if (request) times.push(request.expires_at);
      }
    }
    if (times.length === 0) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(Math.min(...times) + this.limits.alarmDelayMs);
  }

  // ---- storage --------------------------------------------------------------------------

  /**
   * The run row as last read or written. This object is its only writer, so reads (a status
   * poll) need no query; a transaction that fails drops it, since its writes were rolled back.
   */
  private rowCache: RunRow | null | undefined;

  private readRow(): RunRow | null {
    if (!this.hasJob) return null;
    if (this.rowCache === undefined) this.rowCache = readRunRow(this.sql);
    return this.rowCache;
  }

  private transaction<T>(body: () => T): T {
    try {
      return this.ctx.storage.transactionSync(body);
    } catch (error) {
      this.rowCache = undefined;
      throw error;
    }
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
    this.rowCache = row;
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
    const spec = this.spec();
    return toJob(spec, row, this.hasJob && spec.webhook_url ? readWebhook(this.sql) : null);
  }

  /** The job and the tenant objects it reports to: its projection shard and its line. */
  private jobRef() {
    const spec = this.spec();
    return { tenant: spec.tenant, job_id: spec.job_id, ...tenantObjects(spec) };
  }

  /** The contract's 404, naming the job as its object is named: `<tenant>/<job_id>`. */
  private notFound() {
    return jobNotFound(this.ctx.id.name?.split("/").pop() ?? "");
  }
}
