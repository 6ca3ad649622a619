/**
 * CORS: the origins in CORS_ORIGINS (comma-separated, or "*"; `settingsProblems` refuses an entry
 * no browser's Origin could equal). Left empty, a deployment with API keys allows no origin, and
 * local development (no keys) allows localhost origins.
 */
import { cors as honoCors } from "hono/cors";
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../auth";
import { configuredKeys } from "../auth";
import { corsOrigins } from "../settings";

const LOCAL_ORIGIN = /^https?:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/;

export function allowedOrigin(origin: string, env: Env): string | null {
  const listed = corsOrigins(env);
  if (listed.length > 0) return listed.includes("*") || listed.includes(origin) ? origin : null;
  if (configuredKeys(env).length === 0 && LOCAL_ORIGIN.test(origin)) return origin;
  return null;
}

export function cors(): MiddlewareHandler<AppEnv> {
  const handler = honoCors({
    origin: (origin, c) => allowedOrigin(origin, c.env),
    allowMethods: ["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
    allowHeaders: ["Content-Type", "Authorization", "X-API-Key", "Idempotency-Key", "Last-Event-ID", "Range", "If-None-Match", "If-Match", "If-Range"],
    exposeHeaders: ["Location", "Retry-After", "Idempotent-Replayed", "ETag", "Content-Range", "Content-Length", "X-Run-Status", "X-Request-Id"],
    maxAge: 600,
  });
  // Only a browser's cross-origin request carries Origin; any other request needs no CORS headers,
  // and skipping them spares every API call a response built ahead of its handler.
  return (c, next) => (c.req.header("origin") === undefined ? next() : handler(c, next));
}
