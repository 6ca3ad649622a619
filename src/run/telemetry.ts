/**
 * What a job's status change tells the operators: a log line and, when the METRICS Analytics
 * Engine binding is configured, one data point (without it nothing is sent and nothing fails).
 */
import { modelSettings } from "../config";
import { logTransition } from "../log";
import { chosenModel } from "../runners/openai";
import type { RunRow, RunSpec } from "./job";

/** The model the job's steps ask for, as its runner chooses it; "simulated" on the simulated runner. */
function modelOf(env: Env, spec: RunSpec): string {
  if (spec.runner === "simulated") return "simulated";
  const settings = modelSettings(env);
  return settings ? chosenModel(spec.config, settings) : "";
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
    error: to.error,
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
