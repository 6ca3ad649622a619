import type { MiddlewareHandler } from "hono";
import { misconfigured } from "./errors";
import { flagSetting, numberSetting, settingsProblems } from "./settings";
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
  feedKeepChanges: number;
}

export function limits(env: Env): Limits {
  return {
    maxBodyBytes: numberSetting(env, "MAX_BODY_BYTES"),
    inlineResultBytes: numberSetting(env, "INLINE_RESULT_BYTES"),
    retentionMs: numberSetting(env, "RETENTION_SECONDS") * 1000,
    maxStepAttempts: numberSetting(env, "MAX_STEP_ATTEMPTS"),
    alarmDelayMs: numberSetting(env, "ALARM_DELAY_MS"),
    retryBaseMs: numberSetting(env, "RETRY_BASE_MS"),
    maxRunningPerTenant: numberSetting(env, "MAX_RUNNING_PER_TENANT"),
    maxRunningPerKey: numberSetting(env, "MAX_RUNNING_PER_KEY"),
    maxQueuedPerTenant: numberSetting(env, "MAX_QUEUED_PER_TENANT"),
    webhookRetryBaseMs: numberSetting(env, "WEBHOOK_RETRY_BASE_MS"),
    webhookRetryWindowMs: numberSetting(env, "WEBHOOK_RETRY_WINDOW_MS"),
    stallTimeoutMs: numberSetting(env, "STALL_TIMEOUT_MS"),
    feedKeepChanges: numberSetting(env, "FEED_KEEP_CHANGES"),
  };
}

export const DEFAULT_TENANT = "default";

declare global {
  namespace Cloudflare {
    interface Env {
      /** Secret: the model provider's API key. */
      MODEL_API_KEY?: string;
      /** Secret: the key that signs scoped tokens, at least 32 characters. */
      TOKEN_SECRET?: string;
      /** Secret, while TOKEN_SECRET is rotated: the one before it, which still verifies the tokens it signed. */
      TOKEN_SECRET_PREVIOUS?: string;
      /** Secret: the Standard Webhooks signing secret, `whsec_<base64>`. */
      WEBHOOK_SECRET?: string;
      /** Secret, while WEBHOOK_SECRET is rotated: the one before it; every webhook is signed with both. */
      WEBHOOK_SECRET_PREVIOUS?: string;
      /**
       * Not a deployment setting: the tests' bindings (vitest.config.ts) add an hour to every
       * alarm the service schedules, so that no alarm fires by itself and the tests fire them.
       */
      ALARM_DELAY_MS?: string;
    }
  }
}

/** The model endpoint jobs are run on. */
export interface ModelSettings {
  baseUrl: string;
  apiKey: string | null;
  /** The header the key goes in, as it is (Azure OpenAI's `api-key`); null: `Authorization: Bearer <key>`. */
  apiKeyHeader: string | null;
  model: string;
  /** A stream silent this long is given up on (and the step retried). */
  idleTimeoutMs: number;
}

/** The configured model endpoint, or null when jobs run on the simulated runner. */
export function modelSettings(env: Env): ModelSettings | null {
  const baseUrl = (env.MODEL_BASE_URL ?? "").trim();
  if (baseUrl === "") return null;
  return {
    baseUrl,
    apiKey: env.MODEL_API_KEY?.trim() || null,
    apiKeyHeader: env.MODEL_API_KEY_HEADER?.trim() || null,
    model: (env.MODEL_NAME ?? "").trim(),
    idleTimeoutMs: numberSetting(env, "MODEL_IDLE_TIMEOUT_MS"),
  };
}

export const allowSimulate = (env: Env) => flagSetting(env, "ALLOW_SIMULATE");
export const allowPrivateWebhooks = (env: Env) => flagSetting(env, "WEBHOOK_ALLOW_PRIVATE");

/** A signing secret and, while it is rotated, the one before it (`<name>_PREVIOUS`): those set, current first. */
export const rotatingSecrets = (env: Env, name: "TOKEN_SECRET" | "WEBHOOK_SECRET"): string[] =>
  [env[name], env[`${name}_PREVIOUS`]].map((s) => s?.trim() ?? "").filter((s) => s !== "");

/**
 * The secrets every webhook is signed with: WEBHOOK_SECRET, and while it is rotated the one before
 * it, so that a receiver still holding the old secret verifies too (Standard Webhooks' several
 * signatures in one header). None: unsigned, as only local development sends.
 */
export const webhookSecrets = (env: Env): string[] => rotatingSecrets(env, "WEBHOOK_SECRET");

const checked = new WeakMap<Env, string[]>();

/** Middleware: 503 naming the first unsound setting, before anything is read or stored. */
export function settingsChecked(): MiddlewareHandler<{ Bindings: Env }> {
  return async (c, next) => {
    let problems = checked.get(c.env);
    if (!problems) checked.set(c.env, (problems = settingsProblems(c.env)));
    if (problems.length > 0) throw misconfigured(problems[0]);
    await next();
  };
}
