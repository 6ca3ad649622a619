/** The runner chosen by configuration. With no model configured, jobs run on the simulated runner. */
import { simulatedRunner, simulatedTasks } from "./simulated";
import type { Runner } from "./types";

export function activeRunner(_env: Env): Runner {
  return simulatedRunner;
}

/** The ordered tasks of a job, one step each. */
export function planTasks(_env: Env, config: Record<string, unknown>): string[] {
  return simulatedTasks(config);
}
