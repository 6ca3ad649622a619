/**
 * One Durable Object per job, named `<tenant>/<job_id>`. It holds the job row, its steps, an
 * append-only event log and an outbox, and serialises every transition of the job. One alarm
 * drives all background work: the next step, the outbox, the purge after delete, expiry.
 */
import { DurableObject } from "cloudflare:workers";
import { limits, type Limits } from "../config";
import { fail, type Result } from "../errors";
import type { Job } from "../schemas";
import { newJobId } from "../ids";
import { outputPrefix, purgePrefix, readText, type OutputPart } from "../storage/blobs";
import { hasTable, migrate } from "../storage/migrations";
import { Watchers, type LogTail, type NewEvent } from "./events";
import { executeStep, type StepOutcome } from "./execute";
import { initialRow, stepPercentage, toJob, type RunRow, type RunSpec } from "./job";
import { Outbox, type OutboxHost } from "./outbox";
import { eventsAfter, insertEvents, insertSpec, readRunRow, readSpec, readWebhook, RUN_MIGRATIONS, writeRunRow } from "./store";
import { isTerminal, transition, type Action } from "./transitions";

/** While a step runs, the alarm is kept this far ahead so that a lost instance is resumed. */
const STEP_LEASE_MS = 60_000;
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

export class RunObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly limits: Limits;
  /** False for an object that holds no job: nothing may write to it but `create`. */
  private hasSchema: boolean;
  private inflight: { controller: AbortController; done: Promise<void> } | null = null;
  private readonly watchers = new Watchers((after) => this.logAfter(after));
  private readonly outbox = new Outbox(this.outboxHost());

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
    this.transaction(() => {
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

  /** A run slot is free: a queued job tries to start now. False: this job is not waiting (any more). */
  async wake(): Promise<boolean> {
    const row = this.liveRow();
    if (row?.status !== "queued") return false;
    this.writeRow({ ...row, next_step_at: Date.now() });
    await this.armAlarm();
    return true;
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
    await this.outbox.drain();
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
    if (row.status === "queued") {
      const granted = await this.index().acquire(this.spec().job_id);
      const current = this.liveRow();
      if (!current || current.status !== "queued") return; // cancelled or deleted meanwhile; its end frees the slot
      if (!granted) {
        this.writeRow({ ...current, next_step_at: null }); // in line: the index wakes it
        return;
      }
      const started = Date.now();
      row = this.commit(current, { started_at: started, deadline_at: started + this.spec().timeout_s * 1000 }, [
        { type: "log", data: { message: "Job started" } },
      ], "start");
    }
    const now = Date.now(); // read after the slot request, which let time pass
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

    this.transaction(() => {
      this.sql.exec("UPDATE steps SET status = 'running', attempts = attempts + 1, started_at = ? WHERE idx = ?", now, step.idx);
      row = this.commit(row, { current_step: step.name, next_step_at: now + STEP_LEASE_MS }, [
        { type: "progress", data: { percentage: stepPercentage(row.steps_completed, row.steps_total), current_step: step.name } },
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
        onOutput: (delta) => {
          if (controller.signal.aborted || this.liveRow()?.status !== "running") return;
          this.appendEvents([{ type: "output", data: { delta } }]);
          this.watchers.notify();
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
        events.push({ type: "progress", data: { percentage: stepPercentage(done, row.steps_total), current_step: step.name } });
        this.transaction(() => {
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
        this.transaction(() => {
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
    this.transaction(() => {
      this.writeRow(next);
      this.appendEvents(all);
      if (action && isTerminal(next.status) && this.spec().webhook_url) this.outbox.owesWebhook(`msg_${newJobId().slice(4)}`);
      this.outbox.enqueue("index", { job: this.job(next), version: next.version }, Date.now());
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
    this.transaction(() => {
      this.writeRow({ ...row, deleted_at: Date.now(), version: row.version + 1 });
      this.outbox.drop("index");
      this.outbox.enqueue("purge", {}, Date.now());
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
    await this.outbox.drain();
    await this.armAlarm();
  }

  /** Deletion's last leg, in order: R2 under the job's prefix, the index row and key, then storage. */
  private async purge(): Promise<Result<object>> {
    const spec = this.spec();
    try {
      await purgePrefix(this.env.OUTPUTS, outputPrefix(spec.tenant, spec.job_id));
      await this.index().remove(spec.job_id);
    } catch (error) {
      if (this.hasSchema) {
        this.outbox.retryLater("purge");
        await this.armAlarm();
      }
      const message = error instanceof Error ? error.message : String(error);
      return fail("purge_failed", `Job deleted, but purging its data failed and will be retried: ${message}`);
    }
    if (this.hasSchema) {
      this.hasSchema = false;
      this.rowCache = undefined;
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
    const outbox = this.outbox.earliestDue();
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

  /**
   * The run row as last read or written. This object is its only writer, so reads (a status
   * poll) need no query; a transaction that fails drops it, since its writes were rolled back.
   */
  private rowCache: RunRow | null | undefined;

  private readRow(): RunRow | null {
    if (!this.hasSchema) return null;
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

  private outboxHost(): OutboxHost {
    const object = this;
    return {
      storage: this.ctx.storage,
      get env() {
        return object.env;
      },
      get limits() {
        return object.limits;
      },
      hasJob: () => this.hasSchema,
      spec: () => this.spec(),
      currentJob: () => {
        const row = this.readRow();
        return row ? this.job(row) : null;
      },
      finishedParts: () => this.finishedParts(),
      index: () => this.index(),
    };
  }

  private job(row: RunRow): Job {
    const spec = this.spec();
    return toJob(spec, row, this.hasSchema && spec.webhook_url ? readWebhook(this.sql) : null);
  }

  private index() {
    return this.env.TENANTS.getByName(this.spec().tenant);
  }
}
