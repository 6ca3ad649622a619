/** The runner chosen by configuration. With no model configured, jobs run on the simulated runner. */
import { allowSimulate, modelSettings } from "../config";
import type { AgentTask } from "./agents";
import { openAiRunner } from "./openai";
import { simulatedRunner, simulatedTasks } from "./simulated";
import type { Runner } from "./types";

export type RunnerKind = "simulated" | "openai";

/** What `GET /health` reports. */
export function activeRunnerName(env: Env): string {
  return modelSettings(env) ? "openai-compatible" : "simulated";
}

export function runnerFor(env: Env, kind: RunnerKind): Runner {
  const settings = modelSettings(env);
  return kind === "openai" && settings ? openAiRunner(settings) : simulatedRunner;
}

/**
 * The runner a submission runs on and its ordered tasks: the agent's tasks on a model, or the
 * simulated knobs' steps. `config.simulate` picks the simulated runner only when allowed.
 */
export function planRun(env: Env, config: Record<string, unknown>, agentTasks: AgentTask[]): { runner: RunnerKind; tasks: string[]; agent: AgentTask[] } {
  const useModel = modelSettings(env) !== null && !(allowSimulate(env) && config.simulate !== undefined);
  if (useModel) return { runner: "openai", tasks: agentTasks.map((t) => t.name), agent: agentTasks };
  return { runner: "simulated", tasks: simulatedTasks(config), agent: [] };
}
