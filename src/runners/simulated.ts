/**
 * The simulated runner: no network, deterministic output for a given prompt and knobs.
 * It goes through the whole machinery (steps, events, R2, cancel, timeout) like a real one.
 */
import { storedSimulateSchema } from "../schemas";
import { BudgetExceeded, estimateTokens, overBudget, sleep, StepFailed, type Runner, type StepInput, type StepOutput } from "./types";

export const SIMULATE_DEFAULTS = { steps: 3, step_ms: 300 } as const;
const CHUNK_BYTES = 64 * 1024;
const encoder = new TextEncoder();

export interface SimulateKnobs {
  steps: number;
  step_ms: number;
  output_bytes?: number;
  fail_at_step?: number;
  input_at_step?: number;
}

export function simulateKnobs(config: Record<string, unknown>): SimulateKnobs {
  const parsed = storedSimulateSchema().safeParse(config.simulate ?? {});
  return { ...SIMULATE_DEFAULTS, ...(parsed.success ? parsed.data : {}) };
}

/** Bytes of the whole output that step `index` (1-based) of `total` produces. */
export function stepShare(outputBytes: number, index: number, total: number): number {
  return Math.floor((outputBytes * index) / total) - Math.floor((outputBytes * (index - 1)) / total);
}

function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(text)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, "0");
}

/** A repeating 64-byte ASCII line, so any byte count can be produced in fixed-size chunks. */
function patternChunk(prompt: string, index: number, total: number): Uint8Array {
  const line = `step ${index}/${total} ${fnv1a(prompt)} `.padEnd(63, ".") + "\n";
  return encoder.encode(line.repeat(CHUNK_BYTES / 64));
}

function sizedOutput(bytes: number, chunk: Uint8Array, signal: AbortSignal): StepOutput {
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (signal.aborted) return controller.error(signal.reason);
      if (sent >= bytes) return controller.close();
      const next = chunk.subarray(0, Math.min(chunk.length, bytes - sent));
      sent += next.length;
      controller.enqueue(next);
    },
  });
  return { bytes, body };
}

export const simulatedRunner: Runner = {
  name: "simulated",
  async runStep(input: StepInput): Promise<StepOutput> {
    const knobs = simulateKnobs(input.config);
    await sleep(knobs.step_ms, input.signal);
    if (knobs.fail_at_step === input.index) {
      throw new StepFailed(`Simulated failure at step ${input.index} of ${input.total}`);
    }
    let output: StepOutput;
    if (knobs.output_bytes !== undefined) {
      const share = stepShare(knobs.output_bytes, input.index, input.total);
      output = sizedOutput(share, patternChunk(input.prompt, input.index, input.total), input.signal);
    } else {
      const revised = input.revision ? ` (revised after: ${input.revision.feedback})` : "";
      const text = encoder.encode(`Step ${input.index}/${input.total} (${input.task}): simulated answer to: ${input.prompt}${revised}\n`);
      output = sizedOutput(text.length, text, input.signal);
    }
    // No model counts its tokens: they are estimated, as for a provider that sends no usage.
    const usage = { prompt_tokens: estimateTokens(input.prompt), completion_tokens: estimateTokens(output.bytes), estimated: true };
    input.onUsage?.(usage);
    if (overBudget(input.budget, usage.prompt_tokens, usage.completion_tokens)) throw new BudgetExceeded("token budget");
    return output;
  },
};

/** The simulated plan: one task per step. */
export function simulatedTasks({ steps }: SimulateKnobs): string[] {
  return Array.from({ length: steps }, (_, i) => `step_${i + 1}`);
}
