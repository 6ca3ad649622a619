/**
 * A job as its object stores it: the run row (kept in memory, since the object is its only
 * writer), the spec, the event log, and every change of them. `commit` is the one place a change
 * is written: the row, its events and what it owes others (outbox rows) in one transaction, the
 * status moving only as the transition table says. `armAlarm` sets the object's one alarm to the
 * earliest time its rows name.
 */
import type { Limits } from "../config";
import { newId } from "../ids";
import type { Job } from "../schemas";
import type { LogTail, NewEvent } from "./events";
import { keyClaim, outputUrl, placeRequest, stepPercentage, storedInputRequest, tenantObjects, toJob, usageOf, type CopiedStep, type RunRow, type RunSpec } from "./job";
import { owesWebhook, webhookBody, type Outbox } from "./outbox";
import { eventsAfter, insertEvents, insertSpec, readRunRow, readSpec, readWebhook, writeRunRow } from "./store";
import { isTerminal, transition, type Action } from "./transitions";

export class JobRecord {
  readonly sql: SqlStorage;
  /** False for an object that holds no job: nothing may write to it but `create`. */
  private holdsJob: boolean;
  /** The run row and spec as last read or written; a transaction that fails drops them, since its writes were rolled back. */
  private rowCache: RunRow | null | undefined;
  private specCache: RunSpec | null = null;

  /**
   * `exists`: the object holds a job already. `transitioned` is told of every status change once
   * it is committed (the job's log line and metrics data point).
   */
  constructor(
    private readonly ctx: DurableObjectState,
    private readonly outbox: Outbox,
    private readonly limits: Limits,
    exists: boolean,
    private readonly transitioned: (spec: RunSpec, from: RunRow, to: RunRow) => void,
  ) {
    this.sql = ctx.storage.sql;
    this.holdsJob = exists;
  }

  get hasJob(): boolean {
    return this.holdsJob;
  }

  /**
   * Stores a new job: `body` makes its tables and writes its first rows, in one transaction. If
   * it fails, nothing was written and the object still holds no job.
   */
  create<T>(body: () => T): T {
    this.holdsJob = true;
    try {
      return this.transaction(body);
    } catch (error) {
      this.forgotten();
      throw error;
    }
  }

  /** Everything stored was removed: the object holds no job any more. */
  forgotten(): void {
    this.holdsJob = false;
    this.rowCache = undefined;
  }

  row(): RunRow | null {
    if (!this.holdsJob) return null;
    if (this.rowCache === undefined) this.rowCache = readRunRow(this.sql);
    return this.rowCache;
  }

  /** The row of a job that exists and is not being deleted. */
  live(): RunRow | null {
    const row = this.row();
    return row && row.deleted_at === null ? row : null;
  }

  spec(): RunSpec {
    this.specCache ??= readSpec(this.sql);
    return this.specCache;
  }

  /**
   * Writes a new job's spec and its steps (those a retry copied already done, and the revision
   * asked for at the next); the spec is then known without reading it back.
   */
  store(spec: RunSpec, copied: CopiedStep[], revision: string | null): void {
    insertSpec(this.sql, spec, copied, revision);
    this.specCache = spec;
  }

  /** The spec if one is stored (for a log line of a failure), without reading it. */
  knownSpec(): RunSpec | null {
    return this.specCache;
  }

  transaction<T>(body: () => T): T {
    try {
      return this.ctx.storage.transactionSync(body);
    } catch (error) {
      this.rowCache = undefined;
      this.specCache = null;
      throw error;
    }
  }

  write(row: RunRow): void {
    writeRunRow(this.sql, row);
    this.rowCache = row;
  }

  append(events: NewEvent[]): void {
    insertEvents(this.sql, events);
  }

  logAfter(after: number): LogTail {
    const row = this.row();
    if (!row) return { events: [], finished: true };
    return { events: eventsAfter(this.sql, after), finished: isTerminal(row.status) };
  }

  job(row: RunRow): Job {
    const spec = this.spec();
    return toJob(spec, row, this.holdsJob && spec.webhook_url ? readWebhook(this.sql) : null);
  }

  /** The job and the tenant objects it reports to: its projection shard and its line. */
  ref() {
    const spec = this.spec();
    return { tenant: spec.tenant, job_id: spec.job_id, ...tenantObjects(spec) };
  }

  /**
   * Writes the row change, its events and what it owes others (outbox rows) in one transaction.
   * With an action, the status change is the transition table's and a terminal one records
   * `complete`, leaves the tenant's line and owes the webhook.
   */
  commit(row: RunRow, patch: Partial<RunRow>, events: NewEvent[], action?: Action): RunRow {
    const next: RunRow = { ...row, ...patch, version: row.version + 1 };
    const all = [...events];
    const spec = this.spec();
    if (action) {
      const to = transition(row.status, action);
      if (!to) throw new Error(`transition ${action} from ${row.status} is not in the table`);
      next.status = to;
      if (to !== "awaiting_input") next.input_request = null;
      if (row.status === "awaiting_input" && isTerminal(to)) {
        // Ended (rejected, unanswered, cancelled) while a person reviewed its step's answer: that
        // step is not finished. Its answer stays in the output, but a retry runs it again.
        next.steps_completed = row.steps_completed - 1;
        all.push({ type: "progress", data: { percentage: stepPercentage(next.steps_completed, next.steps_total), step: null, current_step: null } });
      }
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
      this.write(next);
      this.append(all);
      if (paused) {
        this.outbox.enqueue("line", this.ref(), Date.now());
        if (spec.webhook_url) {
          // A terminal body is fixed at its first attempt (it may quote the result); a pause's now.
          const body = isTerminal(next.status) ? null : webhookBody(this.job(next), null, outputUrl(spec));
          owesWebhook(this.ctx, this.outbox, newId("msg"), body);
        }
      }
      if (action === "answer") {
        // Its delay and queue TTL were for its first start; an answered job may start at once.
        const place = { ...placeRequest(spec), start_at: null, ttl_s: null };
        this.outbox.enqueue("line", { ...this.ref(), rejoin: place, answered_at: Date.now() }, Date.now());
      }
      this.outbox.enqueueSnapshot({ ...this.ref(), job: this.job(next), version: next.version, ...keyClaim(spec) }, next.status !== row.status);
    });
    if (action) this.transitioned(spec, row, next);
    return next;
  }

  /**
   * The job holds a run slot: it runs from now, its next step due at once. One answered by a
   * person resumes with the run time it had left.
   */
  commitStart(row: RunRow): RunRow {
    const now = Date.now();
    const left = row.time_left_ms ?? this.spec().timeout_s * 1000;
    const resumed = row.started_at !== null;
    return this.commit(row, { started_at: row.started_at ?? now, deadline_at: now + left, time_left_ms: null, next_step_at: now }, [
      { type: "log", data: { message: resumed ? "Job resumed" : "Job started", status: "running" } },
    ], "start");
  }

  commitCancel(row: RunRow): RunRow {
    return this.commit(row, { current_step: null }, [{ type: "log", data: { message: "Job cancelled" } }], "cancel");
  }

  commitFailure(row: RunRow, message: string): RunRow {
    return this.commit(row, { error: message, current_step: null }, [{ type: "log", data: { message } }], "fail");
  }

  /**
   * From here on the job answers 404; the purge outbox row finishes the rest. `discarded`: the job
   * is removed as one its submit never answered with (see RunObject.discard), not deleted.
   */
  markDeleted(row: RunRow, discarded = false): void {
    this.transaction(() => {
      this.write({ ...row, deleted_at: Date.now(), version: row.version + 1 });
      this.outbox.drop("projection");
      this.outbox.enqueue("purge", discarded ? { ...this.ref(), discarded } : this.ref(), Date.now());
    });
  }

  /** One alarm for all due work: the earliest of the next step, the outbox, and expiry. */
  async armAlarm(): Promise<void> {
    const row = this.row();
    if (!row) return;
    const times: number[] = [];
    const outbox = this.outbox.earliestDue();
    if (outbox !== null) times.push(outbox);
    // Deleted, with nothing left to send: all that is owed is the object removing itself.
    if (row.deleted_at !== null && outbox === null) times.push(Date.now());
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
}
