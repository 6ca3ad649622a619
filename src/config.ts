/** Deployment settings read from the Worker's vars, with the contract's defaults. */
export interface Limits {
  maxBodyBytes: number;
  inlineResultBytes: number;
  retentionMs: number;
  maxStepAttempts: number;
  alarmDelayMs: number;
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
  };
}

export const DEFAULT_TENANT = "default";
