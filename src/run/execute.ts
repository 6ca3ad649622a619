/**
 * Running one step: the runner's call under an AbortController that cancel, delete, the job's
 * timeout and the stall watchdog abort, and the step's output streamed into R2.
 */
import { messageOf } from "../errors";
import { runnerFor } from "../runners/choice";
import { BudgetExceeded, StepFailed, TimedOut, TransientError, type CallUsage, type Revision, type StepContext } from "../runners/types";
import { outputPrefix, partKey, writePart, type WrittenPart } from "../storage/blobs";
import { OutputCoalescer } from "./events";
import type { RunSpec } from "./job";

/** Why a step's AbortController was aborted when the step stopped reporting. */
class Stalled extends Error {}

export type StepOutcome =
  | { kind: "written"; part: WrittenPart; streamed: boolean; finishReason: string | null }
  | { kind: "failed"; message: string }
  | { kind: "timed_out" }
  | { kind: "aborted" }
  | { kind: "error"; message: string; retryAfterMs?: number };

export interface StepRun {
  env: Env;
  spec: RunSpec;
  step: { idx: number; name: string };
  total: number;
  deadlineAt: number | null;
  /** A step that reports nothing (no output) this long is stopped, to be retried. */
  stallMs: number;
  controller: AbortController;
  /** The finished steps' outputs, for a model's context. */
  context: () => Promise<StepContext[]>;
  /** The revision a person asked for, when the step runs again. */
  revision?: Revision;
  /** Output text as produced, already coalesced; the caller decides whether it may still be logged. */
  onOutput: (delta: string) => void;
  /** Tokens the job may still spend (its `config.max_total_tokens` less what it used), or null. */
  budget: number | null;
  /** What each model call used; the caller decides whether it may still be recorded. */
  onUsage: (usage: CallUsage) => void;
}

export async function executeStep(run: StepRun): Promise<StepOutcome> {
  const { env, spec, step, controller } = run;
  const signal = controller.signal;
  const timer = run.deadlineAt === null ? undefined : setTimeout(() => controller.abort(new TimedOut()), Math.max(0, run.deadlineAt - Date.now()));
  let watchdog = setTimeout(() => controller.abort(new Stalled()), run.stallMs);
  const deltas = new OutputCoalescer(run.onOutput);
  const key = partKey(outputPrefix(spec.tenant, spec.job_id), step.idx);
  try {
    const output = await runnerFor(env, spec.runner).runStep({
      prompt: spec.prompt,
      index: step.idx,
      total: run.total,
      task: step.name,
      agentTask: spec.agent[step.idx - 1],
      context: spec.runner === "openai" ? await run.context() : [],
      revision: run.revision,
      budget: run.budget,
      onUsage: run.onUsage,
      config: spec.config,
      signal,
      onDelta: (text) => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => controller.abort(new Stalled()), run.stallMs);
        deltas.add(text);
      },
    });
    deltas.flush();
    const part = await writePart(env.OUTPUTS, key, output);
    if (!signal.aborted) return { kind: "written", part, streamed: output.streamed === true, finishReason: output.finishReason ?? null };
    // The part landed after a cancel or delete: it is not the job's output.
    await env.OUTPUTS.delete(key);
    return { kind: "aborted" };
  } catch (error) {
    // An aborted upload may still have landed whole: it is not the job's output either.
    if (signal.aborted) await env.OUTPUTS.delete(key).catch(() => {});
    const reason = signal.reason;
    if (reason instanceof Stalled) return { kind: "error", message: `Step ${step.name} made no progress for ${run.stallMs} ms` };
    if (signal.aborted) return reason instanceof TimedOut ? { kind: "timed_out" } : { kind: "aborted" };
    if (error instanceof BudgetExceeded) return { kind: "failed", message: `Token budget of ${String(spec.config.max_total_tokens)} exceeded at step ${step.name}` };
    if (error instanceof StepFailed) return { kind: "failed", message: error.message };
    return { kind: "error", message: messageOf(error), retryAfterMs: error instanceof TransientError ? error.retryAfterMs : undefined };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    clearTimeout(watchdog);
    deltas.close();
  }
}
