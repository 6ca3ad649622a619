/** The runner chosen by configuration. With no model configured, jobs run on the simulated runner. */
import { allowSimulate, modelSettings } from "../config";
import { openAiRunner } from "./openai/runner";
import { simulatedRunner, simulatedTasks, simulateKnobs, type SimulateKnobs } from "./simulated";
import type { AgentTask, Runner } from "./types";

export type RunnerKind = "simulated" | "openai";

/** What `GET /health` reports. */
export function activeRunnerName(env: Env): string {
  return modelSettings(env) ? "openai-compatible" : "simulated";
}

export function runnerFor(env: Env, kind: RunnerKind): Runner {
  const settings = modelSettings(env);
  return kind === "openai" && settings ? openAiRunner(settings) : simulatedRunner;
}

/** Whether step `index` (1-based) asks a person for input on its answer: its task's `human_input`, or `simulate.input_at_step`. */
export function asksForInput(spec: { runner: RunnerKind; agent: AgentTask[]; config: Record<string, unknown> }, index: number): boolean {
  if (spec.runner === "openai") return spec.agent[index - 1]?.human_input === true;
  return simulateKnobs(spec.config).input_at_step === index;
}

/**
 * The runner a submission runs on and its ordered tasks: the agent's tasks on a model, or the
 * simulated knobs' steps (with the knobs, read once). `config.simulate` picks the simulated runner
 * only when allowed.
 */
export function planRun(
  env: Env,
  config: Record<string, unknown>,
  agentTasks: AgentTask[],
): { runner: RunnerKind; tasks: string[]; agent: AgentTask[]; knobs: SimulateKnobs | null } {
  const useModel = modelSettings(env) !== null && !(allowSimulate(env) && config.simulate !== undefined);
  if (useModel) return { runner: "openai", tasks: agentTasks.map((t) => t.name), agent: agentTasks, knobs: null };
  const knobs = simulateKnobs(config);
  return { runner: "simulated", tasks: simulatedTasks(knobs), agent: [], knobs };
}
