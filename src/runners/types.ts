/** What a runner is given for one step of a job, and what it hands back. */

/** One task of a run, with everything its prompt needs. */
export interface AgentTask {
  name: string;
  role: string;
  goal: string;
  backstory: string;
  description: string;
  expected_output: string;
  /** A person reviews the task's answer before the run goes on (approve, revise, reject). */
  human_input?: boolean;
}

export interface StepContext {
  task: string;
  output: string;
  note?: string;
}

/** A person's feedback on a step's answer, and that answer, for the step's next run. */
export interface Revision {
  feedback: string;
  answer: string;
}

export interface StepInput {
  prompt: string;
  /** 1-based position of the step among `total`. */
  index: number;
  total: number;
  task: string;
  /** The agent task this step runs, for runners that talk to a model. */
  agentTask?: AgentTask;
  /** Outputs of the steps before this one, in order, with the note a person gave on each. */
  context?: StepContext[];
  /** A person asked for this step's answer to be revised. */
  revision?: Revision;
  config: Record<string, unknown>;
  signal: AbortSignal;
  /** Called with output text as the runner produces it (the job coalesces it into events). */
  onDelta?: (text: string) => void;
  /** Tokens the job may still spend, or null for no budget; a call that would pass it is stopped (BudgetExceeded). */
  budget?: number | null;
  /** Called once per model call with what it used, also when the call failed or was stopped. */
  onUsage?: (usage: CallUsage) => void;
}

/** What one model call used: the provider's own counts, or (estimated) characters / 4. */
export interface CallUsage {
  prompt_tokens: number;
  completion_tokens: number;
  estimated: boolean;
}

/** Whether spending `prompt` and `completion` tokens would pass the budget (null: no budget). */
export const overBudget = (budget: number | null | undefined, prompt: number, completion: number) => budget != null && prompt + completion > budget;

/** Tokens in a text where no provider counted them: characters / 4, rounded up. */
export const estimateTokens = (text: string | number) => Math.ceil((typeof text === "number" ? text : text.length) / 4);

/** A step's output as a byte stream of known length, so it can go to R2 without being held whole. */
export interface StepOutput {
  bytes: number;
  body: ReadableStream<Uint8Array>;
  /** True when the text already went out through `onDelta`. */
  streamed?: boolean;
  /** Why the model stopped (`finish_reason`): `length` and `content_filter` mean the answer was cut short. */
  finishReason?: string | null;
}

export interface Runner {
  readonly name: string;
  runStep(input: StepInput): Promise<StepOutput>;
}

/** A failure of the work itself: the job fails with this message and the step is not retried. */
export class StepFailed extends Error {}

/** The job's token budget would be passed: the call in flight is stopped and the job fails. */
export class BudgetExceeded extends StepFailed {}

/** A failure worth retrying (rate limit, server error, broken stream); `retryAfterMs` when the cause said. */
export class TransientError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** The reason a step's AbortController is aborted with when the job's timeout passes. */
export class TimedOut extends Error {}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it is aborted. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
