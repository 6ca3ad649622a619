/**
 * One Durable Object per job, named `<tenant>/<job_id>`. It holds the job row, its steps, an
 * append-only event log and an outbox, and serialises every transition of the job. A request
 * does its own state change and answers; one alarm drives all background work: the outbox (what
 * the job owes its tenant's line and projection, its webhook, a purge), the next step, expiry.
 * The tenant's line starts a queued job (`start`) and expires one (`expire`). The job's row,
 * its events and every transition are written through its record (record.ts); its steps are run
 * and settled by steps.ts.
 */
import { DurableObject } from "cloudflare:workers";
import { limits, type Limits } from "../config";
import { fail, jobNotFound, messageOf, type Result } from "../errors";
import type { InputBody, Job } from "../schemas";
import { logFailure } from "../log";
import { inlineResult, type OutputPart } from "../storage/blobs";
import { hasTable, makeSchema, migrate } from "../storage/migrations";
import type { Revision } from "../runners/types";
import { Watchers, type NamedResult, type StreamFormat } from "./events";
import { initialRow, rejectedAt, stepPercentage, storedInputRequest, type CopiedStep, type RunRow, type RunSpec, type StartAnswer } from "./job";
import { Hold, HOLD_LAPSED } from "./hold";
import { Outbox } from "./outbox";
import { JobRecord } from "./record";
import { Steps } from "./steps";
import { recordTransition } from "./telemetry";
import { answeredWith, finishedParts, recordAnswerKey, stepRevision, type AnswerKey, type FinishedPart, RUN_MIGRATIONS, RUN_SCHEMA } from "./store";
import { isTerminal, transition } from "./transitions";

/** The named stream's `result` carries the output inline up to this size. */
const NAMED_RESULT_BYTES = 16 * 1024;
/**
 * A deletion stopped part-way is taken up again by the job's alarm this long after it began:
 * well after a request's own purge would have ended, so that the two do not run side by side.
 */
const DELETION_RESUMES_MS = 60_000;

export class RunObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly limits: Limits;
  private readonly record: JobRecord;
  private readonly steps: Steps;
  private readonly watchers = new Watchers((after) => this.record.logAfter(after));
  private readonly outbox: Outbox;
  private readonly hold: Hold;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.limits = limits(env);
    this.outbox = new Outbox(ctx);
    this.hold = new Hold(ctx, env, this.limits);
    const transitioned = (spec: RunSpec, from: RunRow, to: RunRow) => recordTransition(this.env, spec, from, to);
    this.record = new JobRecord(ctx, this.outbox, this.limits, hasTable(this.sql, "run"), transitioned);
    this.steps = new Steps(this.record, this.limits, () => this.watchers.notify());
    if (this.record.hasJob) {
      void ctx.blockConcurrencyWhile(async () => {
        migrate(ctx.storage, RUN_MIGRATIONS);
        // Work left behind (an outbox row, a step, a purge) is scheduled again: after a restart the
        // stored alarm may be lost, or known to storage but not to the scheduler.
        await this.record.armAlarm();
      });
    }
  }

  // ---- RPC ----------------------------------------------------------------------------

  /**
   * Stores a new job. `granted`: the tenant's line gave it a run slot at submit, so it starts at
   * once; otherwise it waits, with no alarm, until the line tells it (`start`). The submit that
   * creates it registers it with the projection, so no snapshot is owed yet. A retry gives the
   * steps it copied, and the revision a person asked for at the step it starts at.
   */
  async create(spec: RunSpec, granted: boolean, copied: CopiedStep[] = [], revision: string | null = null): Promise<Result<{ job: Job; version: number }>> {
    if (this.record.hasJob) return fail("internal", "Job already exists");
    // Only a retry that copied outputs held the prefix: a submit's job reads and writes no hold.
    const copies = copied.length > 0;
    if (copies && this.hold.lapsed) return fail("internal", HOLD_LAPSED);
    let row: RunRow = { ...initialRow(spec), steps_completed: copied.length };
    let held = false;
    this.record.create(() => {
      held = copies && this.hold.take();
      makeSchema(this.sql, RUN_MIGRATIONS, RUN_SCHEMA);
      this.record.store(spec, copied, revision);
      this.record.write(row);
      this.record.append([
        { type: "progress", data: { percentage: stepPercentage(copied.length, row.steps_total), step: null, current_step: null } },
        { type: "log", data: { message: "Job queued", status: "queued" } },
        ...(copied.length > 0
          ? [{ type: "log" as const, data: { message: `Retry of ${spec.retry_of}: the output of ${copied.length === 1 ? "step 1" : `steps 1 to ${copied.length}`} was copied, not run again` } }]
          : []),
      ]);
      if (granted) {
        row = this.record.commitStart(row);
        this.outbox.drop("projection");
      }
    });
    if (granted) await this.record.armAlarm();
    // A job that waits has no alarm: not even the one that kept its copies' prefix.
    else if (held) await this.ctx.storage.deleteAlarm();
    return { ok: true, job: this.record.job(row), version: row.version };
  }

  /**
   * Holds this job's output prefix before the job is made, while a retry copies the old job's
   * outputs into it (see ./hold): purged if the job is never made. Refused once the hold lapsed.
   */
  async holdPrefix(tenant: string, jobId: string): Promise<Result<object>> {
    if (this.record.hasJob) return fail("internal", "Job already exists");
    return (await this.hold.hold(tenant, jobId)) ? { ok: true } : fail("internal", HOLD_LAPSED);
  }

  get(): Result<{ job: Job }> {
    const row = this.record.live();
    return row ? { ok: true, job: this.record.job(row) } : this.notFound();
  }

  /** Persists `cancelled` first, then stops the step in flight; what it owes others goes out later. */
  async cancel(): Promise<Result<{ job: Job }>> {
    const row = this.record.live();
    if (!row) return this.notFound();
    if (!transition(row.status, "cancel")) {
      return fail("invalid_state", `Cannot cancel job with status: ${row.status}`);
    }
    const next = this.record.commitCancel(row);
    await this.steps.stop("cancelled");
    this.watchers.notify();
    await this.record.armAlarm();
    return { ok: true, job: this.record.job(next) };
  }

  /**
   * The job answers 404 from here on. The purge (R2, its projection row and key, its place in
   * line) runs now, as the contract's DELETE requires; a webhook still owed is kept until it is
   * delivered or given up, then the object removes itself.
   */
  async delete(force: boolean): Promise<Result<object>> {
    let row = this.record.live();
    if (!row) return this.notFound();
    if (!isTerminal(row.status)) {
      if (!force) return fail("invalid_state", "Cannot delete running job. Cancel it first.");
      row = this.record.commitCancel(row);
    }
    await this.markDeleted(row);
    await this.steps.stop("deleted");
    return this.finishDeletion();
  }

  /**
   * Removes a job its submit could not register, or whose submit failed: another job holds its
   * idempotency key, or its client was answered with the failure. Nothing of it is kept, and its
   * webhook is never called.
   */
  async discard(): Promise<void> {
    const row = this.record.live();
    if (!row) return;
    this.record.transaction(() => {
      this.sql.exec("DELETE FROM webhook");
      this.outbox.drop("webhook");
      this.outbox.enqueue("line", this.record.ref(), Date.now());
    });
    await this.markDeleted(row, true);
    await this.steps.stop("deleted");
    await this.finishDeletion();
  }

  /**
   * What a retry of this job starts from: its spec, its finished steps' outputs, and the revision
   * a person asked for at its first unfinished step, if any. Only a failed or cancelled job can be
   * retried. A step whose answer a person never approved has its output but is not counted
   * finished (see `commit`): it is not among them.
   */
  retrySource(): Result<{ spec: RunSpec; parts: FinishedPart[]; revision: string | null }> {
    const row = this.record.live();
    if (!row) return this.notFound();
    if (row.status !== "failed" && row.status !== "cancelled") return fail("invalid_state", "Only failed or cancelled jobs can be retried");
    return { ok: true, spec: this.record.spec(), parts: finishedParts(this.sql).slice(0, row.steps_completed), revision: stepRevision(this.sql, row.steps_completed + 1) };
  }

  /** The job and its finished output parts, in order: what /result and /output serve. */
  output(): Result<{ job: Job; parts: OutputPart[] }> {
    const row = this.record.live();
    if (!row) return this.notFound();
    return { ok: true, job: this.record.job(row), parts: finishedParts(this.sql) };
  }

  /**
   * An SSE stream of the events after `after`, live until the job ends: in PraisonAI's format
   * (then `[DONE]`), or with `named` in the named format (then the job's `result`).
   */
  stream(after: number, named?: { resultUrl: string }): Result<{ body: ReadableStream<Uint8Array> }> {
    if (!this.record.live()) return this.notFound();
    const format: StreamFormat = named ? { kind: "named", jobId: this.record.spec().job_id, result: () => this.namedResult(named.resultUrl) } : { kind: "default" };
    return { ok: true, body: this.watchers.open(after, format) };
  }

  /** The named stream's last event: the result inline when the job succeeded with at most 16 KiB. */
  private async namedResult(resultUrl: string): Promise<NamedResult> {
    const row = this.record.row();
    const status = row?.status ?? "cancelled";
    const result = status === "succeeded" ? await inlineResult(this.env.OUTPUTS, finishedParts(this.sql), NAMED_RESULT_BYTES) : null;
    return { status, result, result_url: resultUrl, error: row?.error ?? null };
  }

  /**
   * A person's answer to the job's request for input. Approve keeps the step's answer (the input
   * is a note for the next tasks), revise runs the step again with the input as feedback, reject
   * fails the job. An answered job waits for a run slot again, ahead of jobs not yet started.
   * The answer is committed before anything is awaited, so of two racing answers one wins. An
   * answer sent again under its idempotency key (`key`), say after its reply was lost, is not
   * given twice: it is answered with the job as it is now (`replayed`).
   */
  async input(answer: InputBody, key: AnswerKey | null = null): Promise<Result<{ job: Job; replayed: boolean }>> {
    const row = this.record.live();
    if (!row) return this.notFound();
    if (key !== null) {
      const given = answeredWith(this.sql, key.key);
      if (given === key.hash) return { ok: true, job: this.record.job(row), replayed: true };
      if (given !== null) return fail("conflict", "Idempotency key already used for another answer");
    }
    const request = storedInputRequest(row);
    if (row.status !== "awaiting_input" || !request) {
      return fail("conflict", `Job is not awaiting input. Current status: ${row.status}`);
    }
    const text = answer.input ?? "";
    // The answer, and the key it came under, in one transaction: a repeat finds the key only if the answer was given.
    const next = this.record.transaction((): RunRow => {
      if (key) recordAnswerKey(this.sql, request.step_index, key);
      if (answer.action === "reject") return this.record.commitFailure(row, `${rejectedAt(request.step)}: ${text}`);
      if (answer.action === "approve") {
        this.sql.exec("UPDATE steps SET note = ? WHERE idx = ?", text === "" ? null : text, request.step_index);
        return this.record.commit(row, { current_step: null }, [{ type: "log", data: { message: `Input approved at step ${request.step}`, status: "queued" } }], "answer");
      }
      const revision: Revision = { feedback: text, answer: request.output };
      this.sql.exec(
        "UPDATE steps SET status = 'pending', attempts = 0, last_error = NULL, output_key = NULL, output_bytes = NULL, output_etag = NULL, revision = ? WHERE idx = ?",
        JSON.stringify(revision),
        request.step_index,
      );
      const completed = row.steps_completed - 1;
      return this.record.commit(row, { steps_completed: completed, current_step: null }, [
        { type: "log", data: { message: `Step ${request.step} will run again with the feedback given`, status: "queued" } },
        { type: "progress", data: { percentage: stepPercentage(completed, row.steps_total), step: null, current_step: null } },
      ], "answer");
    });
    await this.record.armAlarm();
    this.watchers.notify();
    return { ok: true, job: this.record.job(next), replayed: false };
  }

  // ---- what the tenant's line tells it ----------------------------------------------------

  /** The line granted this job a run slot: a queued job starts now. Idempotent. */
  async start(): Promise<StartAnswer> {
    const row = this.record.row();
    if (!row) return "missing";
    if (row.deleted_at !== null) return "not_waiting";
    if (row.status === "running") return "running";
    if (row.status !== "queued") return "not_waiting";
    this.record.commitStart(row);
    await this.record.armAlarm();
    this.watchers.notify();
    return "started";
  }

  /** The job's queue TTL passed before it started: a job still queued fails with `message`. */
  async expire(message: string): Promise<boolean> {
    const row = this.record.live();
    if (row?.status !== "queued") return false;
    this.record.commit(row, { error: message, current_step: null }, [{ type: "log", data: { message } }], "expire");
    await this.record.armAlarm();
    this.watchers.notify();
    return true;
  }

  /** Whether this job still holds a run slot: asked by the line's audit. */
  holdsSlot(): boolean {
    return this.record.live()?.status === "running";
  }

  // ---- background work ------------------------------------------------------------------

  /**
   * The platform retries a failing alarm only a few times, so the alarm never fails: whatever
   * went wrong, it schedules itself again a little later.
   */
  async alarm(): Promise<void> {
    // No job here: a retry's hold on its prefix, if any, for a job never made.
    if (!this.record.hasJob) return this.hold.lapse();
    try {
      await this.runDueWork();
    } catch (error) {
      logFailure("the job's alarm failed; trying again later", error, { job_id: this.record.knownSpec()?.job_id });
      if (this.record.hasJob) await this.ctx.storage.setAlarm(Date.now() + this.limits.retryBaseMs + this.limits.alarmDelayMs);
    }
  }

  private async runDueWork(): Promise<void> {
    const row = this.record.row();
    if (!row) return;
    if (row.deleted_at !== null) {
      await this.finishDeletion(true);
      return;
    }
    if (this.steps.running) {
      // A step is running in this very instance; the alarm only keeps its lease.
      await this.record.armAlarm();
      return;
    }
    // What the last change owes goes out before the next step: the projection hears of a start
    // when it happens, not after the first step.
    if (!(await this.deliver())) return;
    const current = this.record.live();
    const request = current && storedInputRequest(current);
    if (current && request && request.expires_at <= Date.now()) {
      this.record.commitFailure(current, `No input within ${this.record.spec().input_timeout_s} s at step ${request.step}`);
      this.watchers.notify();
      if (!(await this.deliver())) return;
    } else if (current && this.steps.due(current)) {
      await this.steps.runNext(current, this.env);
      this.watchers.notify();
      if (!(await this.deliver())) return;
    }
    const after = this.record.row();
    if (!after) return;
    if (after.deleted_at !== null) {
      await this.finishDeletion(true);
      return;
    }
    if (isTerminal(after.status) && after.expires_at !== null && after.expires_at <= Date.now()) {
      await this.markDeleted(after);
      await this.finishDeletion(true);
      return;
    }
    await this.record.armAlarm();
  }

  /**
   * Delivers what the job owes that is due. False when the projection found its idempotency key
   * held by another job: its submit was cut short before registering it, and the repeat of that
   * submit made the job its client knows. This one is discarded, its webhook never called.
   */
  private async deliver(): Promise<boolean> {
    if ((await this.outbox.drain(this.env)) !== "superseded") return true;
    const { job_id, tenant, request_id } = this.record.spec();
    logFailure("a submit cut short before registering its job; the job is discarded", "its idempotency key is held by the job of the submit's repeat, or was until that job was deleted", {
      job_id,
      tenant,
      request_id: request_id ?? undefined,
    });
    await this.discard();
    return false;
  }

  /**
   * From here on the job answers 404; the purge outbox row finishes the rest. Its alarm is set
   * as the deletion begins, so that a deletion stopped anywhere after (its object reset by a
   * deploy or a crash) is finished even if nothing asks for the job again: a waiting job had no
   * alarm, and the one a finished job had may be days away.
   */
  private async markDeleted(row: RunRow, discarded = false): Promise<void> {
    this.record.markDeleted(row, discarded);
    await this.ctx.storage.setAlarm(Date.now() + DELETION_RESUMES_MS + this.limits.alarmDelayMs);
    // Watchers hear what was logged up to here (a forced cancel's `complete`), then their streams end.
    this.watchers.notify();
    this.watchers.closeAll();
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
      if (this.record.hasJob) await this.record.armAlarm();
      return fail("purge_failed", `Job deleted, but purging its data failed and will be retried: ${messageOf(error)}`);
    }
    if (!this.record.hasJob || !hasTable(this.sql, "outbox")) return { ok: true };
    if (this.outbox.isEmpty()) {
      this.record.forgotten();
      // The alarm goes with the storage (deleteAll takes it, from the compatibility date
      // 2026-02-24), never before it: an object stopped in between removes itself when it rings.
      await this.ctx.storage.deleteAll();
    } else {
      await this.record.armAlarm();
    }
    return { ok: true };
  }

  /** The contract's 404, naming the job as its object is named: `<tenant>/<job_id>`. */
  private notFound() {
    return jobNotFound(this.ctx.id.name?.split("/").pop() ?? "");
  }
}
