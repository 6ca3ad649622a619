/**
 * Requests per API key, and per scoped token apart from the key that minted it, so that a browser
 * holding a token cannot spend its backend's requests (nor one user another's). Limited by
 * Cloudflare's rate limiting bindings (RATE_LIMITER, TOKEN_RATE_LIMITER) where the deployment has
 * them, else by a fixed window counted in this isolate (approximate: each isolate counts on its
 * own). Without API keys (local development) nothing is limited.
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

/** What a request is counted under: its key's budget, or its token's. */
const BUDGETS = {
  key: { binding: "RATE_LIMITER", setting: "RATE_LIMIT_PER_MINUTE", detail: "Rate limit exceeded for this API key" },
  token: { binding: "TOKEN_RATE_LIMITER", setting: "TOKEN_RATE_LIMIT_PER_MINUTE", detail: "Rate limit exceeded for this token" },
} as const;

const fallbacks = new Map<keyof typeof BUDGETS, FixedWindowLimiter>();

export function rateLimit(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const keyId = c.get("keyId");
    if (keyId === null) return next();
    const token = c.get("token");
    const kind = token === null ? "key" : "token";
    const { binding, setting, detail } = BUDGETS[kind];
    const counted = token === null ? keyId : token.id;
    let waitMs = 0;
    const limiter = c.env[binding] as RateLimit | undefined;
    if (limiter) {
      const { success } = await limiter.limit({ key: counted });
      if (!success) waitMs = RATE_PERIOD_S * 1000;
    } else {
      let fallback = fallbacks.get(kind);
      if (!fallback) fallbacks.set(kind, (fallback = new FixedWindowLimiter(numberSetting(c.env, setting), RATE_PERIOD_S * 1000)));
      waitMs = fallback.hit(counted);
    }
    if (waitMs > 0) throw new ApiError("rate_limited", detail, {}, { "Retry-After": String(Math.ceil(waitMs / 1000)) });
    return next();
  };
}
