/** What a runner is given for one step of a job, and what it hands back. */
export interface StepInput {
  prompt: string;
  /** 1-based position of the step among `total`. */
  index: number;
  total: number;
  task: string;
  config: Record<string, unknown>;
  signal: AbortSignal;
}

/** A step's output as a byte stream of known length, so it can go to R2 without being held whole. */
export interface StepOutput {
  bytes: number;
  body: ReadableStream<Uint8Array>;
}

export interface Runner {
  readonly name: string;
  runStep(input: StepInput): Promise<StepOutput>;
}

/** A failure of the work itself: the job fails with this message and the step is not retried. */
export class StepFailed extends Error {}

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
