import type { ModelSettings } from "./runners/openai";
/** Deployment settings read from the Worker's vars, with the contract's defaults. */
export interface Limits {
  maxBodyBytes: number;
  inlineResultBytes: number;
  retentionMs: number;
  maxStepAttempts: number;
  alarmDelayMs: number;
  retryBaseMs: number;
  maxRunningPerTenant: number;
  maxRunningPerKey: number;
  maxQueuedPerTenant: number;
  webhookRetryBaseMs: number;
  webhookRetryWindowMs: number;
  stallTimeoutMs: number;
}

function positiveInt(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : fallback;
}

export function limits(env: Env): Limits {
  return {
    maxBodyBytes: positiveInt(env.MAX_BODY_BYTES, 1024 * 1024),
    inlineResultBytes: positiveInt(env.INLINE_RESULT_BYTES, 1024 * 1024),
    retentionMs: positiveInt(env.RETENTION_SECONDS, 7 * 86400) * 1000,
    maxStepAttempts: Math.max(1, positiveInt(env.MAX_STEP_ATTEMPTS, 3)),
    alarmDelayMs: positiveInt(env.ALARM_DELAY_MS, 0),
    retryBaseMs: positiveInt(env.RETRY_BASE_MS, 1000),
    maxRunningPerTenant: Math.max(1, positiveInt(env.MAX_RUNNING_PER_TENANT, 10)),
    maxRunningPerKey: Math.max(1, positiveInt(env.MAX_RUNNING_PER_KEY, 2)),
    maxQueuedPerTenant: Math.max(1, positiveInt(env.MAX_QUEUED_PER_TENANT, 100_000)),
    webhookRetryBaseMs: Math.max(1, positiveInt(env.WEBHOOK_RETRY_BASE_MS, 10_000)),
    webhookRetryWindowMs: positiveInt(env.WEBHOOK_RETRY_WINDOW_MS, 86_400_000),
    stallTimeoutMs: Math.max(1, positiveInt(env.STALL_TIMEOUT_MS, 900_000)),
  };
}

export const DEFAULT_TENANT = "default";

declare global {
  namespace Cloudflare {
    interface Env {
      /** Secret: the model provider's API key. */
      MODEL_API_KEY?: string;
      /** Secret: the Standard Webhooks signing secret, `whsec_<base64>`. */
      WEBHOOK_SECRET?: string;
      /**
       * Not a deployment setting: the tests' bindings (vitest.config.ts) add an hour to every
       * alarm the service schedules, so that no alarm fires by itself and the tests fire them.
       */
      ALARM_DELAY_MS?: string;
    }
  }
}

/** The configured model endpoint, or null when jobs run on the simulated runner. */
export function modelSettings(env: Env): ModelSettings | null {
  const baseUrl = (env.MODEL_BASE_URL ?? "").trim();
  if (baseUrl === "") return null;
  return {
    baseUrl,
    apiKey: env.MODEL_API_KEY?.trim() || null,
    model: (env.MODEL_NAME ?? "").trim(),
    idleTimeoutMs: Math.max(1, positiveInt(env.MODEL_IDLE_TIMEOUT_MS, 60_000)),
  };
}

export const allowSimulate = (env: Env) => env.ALLOW_SIMULATE === "true";
export const allowPrivateWebhooks = (env: Env) => env.WEBHOOK_ALLOW_PRIVATE === "true";
