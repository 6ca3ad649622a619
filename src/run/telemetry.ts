/**
 * What a job's status change tells the operators: a log line and, when the METRICS Analytics
 * Engine binding is configured, one data point (without it nothing is sent and nothing fails).
 */
import { modelSettings } from "../config";
import { logTransition } from "../log";
import { chosenModel } from "../runners/openai/runner";
import { rejectedAt, type RunRow, type RunSpec } from "./job";

/** The model the job's steps ask for, as its runner chooses it; "simulated" on the simulated runner. */
function modelOf(env: Env, spec: RunSpec): string {
  if (spec.runner === "simulated") return "simulated";
  const settings = modelSettings(env);
  return settings ? chosenModel(spec.config, settings) : "";
}

/**
 * The job's error as its log line carries it. A rejection's reason is a person's words (up to
 * 64 KiB), which no log line holds, as none holds a prompt: the line says at which step.
 */
function loggedError(spec: RunSpec, from: RunRow, to: RunRow): string | null {
  if (from.status !== "awaiting_input" || to.error === null) return to.error;
  // Ended while awaiting, the step under review is no longer counted: it is the next one.
  const rejected = rejectedAt(spec.tasks[to.steps_completed]);
  return to.error.startsWith(`${rejected}: `) ? rejected : to.error;
}

/**
 * One data point per transition. blobs: tenant, status, runner, model, previous status;
 * doubles: run time so far (ms, 0 before it started), tokens; index: the tenant.
 */
export function recordTransition(env: Env, spec: RunSpec, from: RunRow, to: RunRow): void {
  logTransition({
    job_id: spec.job_id,
    tenant: spec.tenant,
    from: from.status,
    to: to.status,
    step: to.steps_completed,
    error: loggedError(spec, from, to),
    request_id: spec.request_id,
  });
  const ranMs = to.started_at === null ? 0 : (to.completed_at ?? Date.now()) - to.started_at;
  // A deployment may leave the binding out of its config.
  (env.METRICS as AnalyticsEngineDataset | undefined)?.writeDataPoint({
    blobs: [spec.tenant, to.status, spec.runner, modelOf(env, spec), from.status],
    doubles: [ranMs, to.prompt_tokens + to.completion_tokens],
    indexes: [spec.tenant],
  });
}
