/**
 * A job's steps, run one at a time from its object's alarm: the next one marked running and
 * checkpointed, run with an AbortController that cancel and delete reach (`stop`), and its
 * outcome settled in the job's record: its output, a retry after a backoff, a request for a
 * person's input, or the job's failure.
 */
import type { Limits } from "../config";
import { asksForInput } from "../runners/choice";
import type { CallUsage, Revision, StepContext } from "../runners/types";
import { readText } from "../storage/blobs";
import type { NewEvent } from "./events";
import { executeStep, type StepOutcome } from "./execute";
import { inputRequest, stepPercentage, type RunRow, type StoredInputRequest } from "./job";
import type { JobRecord } from "./record";
import { finishedParts } from "./store";
import { isTerminal } from "./transitions";

/** While a step runs, the alarm is kept this far ahead so that a lost instance is resumed. */
const STEP_LEASE_MS = 60_000;
/** An output event carries a step's text when it is at most this long; larger output is only in R2. */
const OUTPUT_EVENT_BYTES = 16 * 1024;
/** A request for input quotes at most this much of the step's answer. */
const INPUT_OUTPUT_BYTES = 16 * 1024;

/** The log line for an answer the model cut short (its `finish_reason`), or null when it ended of itself. */
function cutShort(step: string, finishReason: string | null): string | null {
  if (finishReason === "length") return `Step ${step}: the model stopped at its token limit (finish_reason: length); the answer may be cut short`;
  if (finishReason === "content_filter") return `Step ${step}: the provider's content filter stopped the answer (finish_reason: content_filter); it may be cut short`;
  return null;
}

type StepRow = {
  idx: number;
  name: string;
  status: "pending" | "running" | "done";
  attempts: number;
  last_error: string | null;
  /** The revision a person asked for (JSON of Revision), when the step runs again. */
  revision: string | null;
};

export class Steps {
  private inflight: { controller: AbortController; done: Promise<void> } | null = null;

  /** `notify`: the job's stream watchers are told of new events. */
  constructor(
    private readonly record: JobRecord,
    private readonly limits: Limits,
    private readonly notify: () => void,
  ) {}

  /** A step is running in this very instance. */
  get running(): boolean {
    return this.inflight !== null;
  }

  /** Stops the step in flight, if any, and waits until it has stopped. */
  async stop(reason: string): Promise<void> {
    const inflight = this.inflight;
    if (!inflight) return;
    inflight.controller.abort(new Error(reason));
    await inflight.done;
  }

  /** Work is due at its time, at the deadline, or at once when a step's instance was lost. */
  due(row: RunRow): boolean {
    if (isTerminal(row.status)) return false;
    const now = Date.now();
    if ((row.next_step_at ?? Infinity) <= now || (row.deadline_at ?? Infinity) <= now) return true;
    return this.record.sql.exec("SELECT 1 FROM steps WHERE status = 'running'").toArray().length > 0;
  }

  /**
   * Runs the job's next step and settles its outcome. A queued job waits for the line; one past
   * its deadline, or out of attempts at its step, fails; one with no step left succeeds.
   */
  async runNext(start: RunRow, env: Env): Promise<void> {
    let row = start;
    if (row.status === "queued") {
      // Only the line starts a queued job (`start`); a time left from before it waited is void.
      this.record.write({ ...row, next_step_at: null });
      return;
    }
    const now = Date.now();
    if (row.deadline_at !== null && now >= row.deadline_at) return void this.record.commitFailure(row, this.timeoutMessage());

    const step = this.record.sql
      .exec<StepRow>("SELECT idx, name, status, attempts, last_error, revision FROM steps WHERE status != 'done' ORDER BY idx LIMIT 1")
      .toArray()[0];
    if (!step) {
      this.record.commit(row, { current_step: null }, [], "succeed");
      return;
    }
    if (step.attempts >= this.limits.maxStepAttempts) {
      const cause = step.last_error ?? "it was interrupted";
      return void this.record.commitFailure(row, `Step ${step.name} failed after ${step.attempts} attempts: ${cause}`);
    }

    this.record.transaction(() => {
      this.record.sql.exec("UPDATE steps SET status = 'running', attempts = attempts + 1, started_at = ? WHERE idx = ?", now, step.idx);
      row = this.record.commit(row, { current_step: step.name, next_step_at: now + STEP_LEASE_MS }, [
        { type: "progress", data: { percentage: stepPercentage(row.steps_completed, row.steps_total), step: step.idx, current_step: step.name } },
      ]);
    });
    await this.record.armAlarm();
    this.notify();

    const outcome = await this.execute(step, row, env);
    const current = this.record.live();
    if (!current || current.status !== "running") return; // cancelled or deleted meanwhile: write nothing
    this.settle(current, step, outcome);
  }

  /** Runs one step, with an AbortController that cancel and delete reach through `inflight`. */
  private async execute(step: StepRow, row: RunRow, env: Env): Promise<StepOutcome> {
    const controller = new AbortController();
    // The first text of this run of the step: what a client holds of the step from an earlier run is void.
    let first = true;
    let release!: () => void;
    this.inflight = { controller, done: new Promise<void>((resolve) => (release = resolve)) };
    try {
      return await executeStep({
        env,
        spec: this.record.spec(),
        step,
        total: row.steps_total,
        deadlineAt: row.deadline_at,
        stallMs: this.limits.stallTimeoutMs,
        controller,
        context: () => this.earlierOutputs(env.OUTPUTS),
        revision: step.revision === null ? undefined : (JSON.parse(step.revision) as Revision),
        onOutput: (delta) => {
          if (controller.signal.aborted || this.record.live()?.status !== "running") return;
          this.record.append([{ type: "output", data: { delta, step: step.idx, first } }]);
          first = false;
          this.notify();
        },
        budget: this.budgetLeft(row),
        onUsage: (usage) => {
          // A call stopped by cancel or delete is not recorded: nothing is written after them.
          const current = this.record.live();
          if (controller.signal.aborted || current?.status !== "running") return;
          this.recordUsage(current, step.idx, usage);
        },
      });
    } finally {
      this.inflight = null;
      release();
    }
  }

  private settle(row: RunRow, step: StepRow, outcome: StepOutcome): void {
    switch (outcome.kind) {
      case "written":
        return this.settleWritten(row, step, outcome);
      case "failed":
        return void this.record.commitFailure(row, outcome.message);
      case "timed_out":
        return void this.record.commitFailure(row, this.timeoutMessage());
      case "aborted":
        return;
      case "error":
        return this.settleError(row, step, outcome);
    }
  }

  /** A step whose output was written: it is done, and the job asks a person, goes on, or succeeds. */
  private settleWritten(row: RunRow, step: StepRow, outcome: Extract<StepOutcome, { kind: "written" }>): void {
    const { part } = outcome;
    const done = row.steps_completed + 1;
    const events: NewEvent[] = [];
    if (outcome.streamed) {
      // Its text already went out as output events while it was produced.
    } else if (part.bytes <= OUTPUT_EVENT_BYTES) {
      events.push({ type: "output", data: { delta: new TextDecoder().decode(part.head), step: step.idx, first: true } });
    } else {
      events.push({ type: "log", data: { message: `Step ${step.name} wrote ${part.bytes} bytes of output` } });
    }
    const cut = cutShort(step.name, outcome.finishReason);
    if (cut) events.push({ type: "log", data: { message: cut } });
    events.push({ type: "progress", data: { percentage: stepPercentage(done, row.steps_total), step: step.idx, current_step: step.name } });
    const asks = asksForInput(this.record.spec(), step.idx);
    this.record.transaction(() => {
      this.record.sql.exec(
        "UPDATE steps SET status = 'done', finished_at = ?, output_key = ?, output_bytes = ?, output_etag = ? WHERE idx = ?",
        Date.now(),
        part.key,
        part.bytes,
        part.etag,
        step.idx,
      );
      const next = this.record.commit(row, { steps_completed: done, next_step_at: asks ? null : Date.now() }, events);
      if (asks) this.commitAsk(next, step, part.head);
      else if (done >= row.steps_total) this.record.commit(next, { current_step: null }, [], "succeed");
    });
  }

  /** An infrastructure error (R2, the runner's transport): the step is retried, a bounded number of times. */
  private settleError(row: RunRow, step: StepRow, outcome: Extract<StepOutcome, { kind: "error" }>): void {
    const attempt = step.attempts + 1;
    if (attempt >= this.limits.maxStepAttempts) {
      return void this.record.commitFailure(row, `Step ${step.name} failed after ${attempt} attempts: ${outcome.message}`);
    }
    const backoff = Math.min(60_000, this.limits.retryBaseMs * 2 ** step.attempts);
    const retryAt = Date.now() + Math.max(backoff, outcome.retryAfterMs ?? 0);
    this.record.transaction(() => {
      this.record.sql.exec("UPDATE steps SET status = 'pending', last_error = ? WHERE idx = ?", outcome.message, step.idx);
      this.record.commit(row, { next_step_at: retryAt }, [{ type: "log", data: { message: `Step ${step.name} failed, will retry: ${outcome.message}` } }]);
    });
  }

  /** Tokens the job may still spend under `config.max_total_tokens`, or null when it has no budget. */
  private budgetLeft(row: RunRow): number | null {
    const max = this.record.spec().config.max_total_tokens;
    return typeof max === "number" ? max - row.prompt_tokens - row.completion_tokens : null;
  }

  /** Adds one model call's usage to its step and to the job. */
  private recordUsage(row: RunRow, stepIndex: number, usage: CallUsage): void {
    this.record.transaction(() => {
      this.record.sql.exec(
        "UPDATE steps SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?, model_calls = model_calls + 1 WHERE idx = ?",
        usage.prompt_tokens,
        usage.completion_tokens,
        stepIndex,
      );
      this.record.commit(row, {
        prompt_tokens: row.prompt_tokens + usage.prompt_tokens,
        completion_tokens: row.completion_tokens + usage.completion_tokens,
        model_calls: row.model_calls + 1,
        estimated_calls: row.estimated_calls + (usage.estimated ? 1 : 0),
      }, []);
    });
  }

  /** What the finished steps produced, for the next task's context, with the notes people gave. */
  private async earlierOutputs(outputs: R2Bucket): Promise<StepContext[]> {
    return Promise.all(
      finishedParts(this.record.sql).map(async (part) => ({
        task: part.name,
        output: await readText(outputs, [part]),
        ...(part.note === null ? {} : { note: part.note }),
      })),
    );
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
      expires_at: now + this.record.spec().input_timeout_s * 1000,
    };
    const patch: Partial<RunRow> = {
      input_request: JSON.stringify(request),
      time_left_ms: row.deadline_at === null ? null : Math.max(0, row.deadline_at - now),
      deadline_at: null,
      next_step_at: null,
      current_step: step.name,
    };
    const shown = inputRequest({ ...row, ...patch });
    return this.record.commit(row, patch, [
      { type: "log", data: { message: `Awaiting input at step ${step.name}`, status: "awaiting_input" } },
      { type: "input_required", data: shown! },
    ], "ask");
  }

  timeoutMessage(): string {
    return `Job timed out after ${this.record.spec().timeout_s} seconds`;
  }
}
