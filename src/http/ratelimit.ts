/**
 * Requests per API key, limited by Cloudflare's rate limiting binding (RATE_LIMITER) where the
 * deployment has it, else by a fixed window counted in this isolate (approximate: each isolate
 * counts on its own). Without API keys (local development) nothing is limited.
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../auth";
import { numberSetting } from "../settings";
import { ApiError } from "../errors";

export const RATE_PERIOD_S = 60;

/** A fixed-window counter: at most `limit` hits per key in each window of `periodMs`. */
export class FixedWindowLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limit: number,
    private readonly periodMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts a hit; returns 0 when allowed, else the milliseconds until the window resets. */
  hit(key: string): number {
    const now = this.now();
    let window = this.windows.get(key);
    if (!window || now - window.start >= this.periodMs) {
      if (this.windows.size > 10_000) this.windows.clear();
      window = { start: now, count: 0 };
      this.windows.set(key, window);
    }
    window.count++;
    return window.count <= this.limit ? 0 : window.start + this.periodMs - now;
  }
}

let fallback: FixedWindowLimiter | null = null;

export function rateLimit(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const keyId = c.get("keyId");
    if (keyId === null) return next();
    let waitMs = 0;
    if (c.env.RATE_LIMITER) {
      const { success } = await c.env.RATE_LIMITER.limit({ key: keyId });
      if (!success) waitMs = RATE_PERIOD_S * 1000;
    } else {
      fallback ??= new FixedWindowLimiter(numberSetting(c.env, "RATE_LIMIT_PER_MINUTE"), RATE_PERIOD_S * 1000);
      waitMs = fallback.hit(keyId);
    }
    if (waitMs > 0) {
      throw new ApiError("rate_limited", "Rate limit exceeded for this API key", {}, { "Retry-After": String(Math.ceil(waitMs / 1000)) });
    }
    return next();
  };
}
