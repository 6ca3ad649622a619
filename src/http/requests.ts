/**
 * Every request gets an id (a well-formed incoming `X-Request-Id` is kept), answers with it, and
 * leaves one log line when it is answered.
 */
import type { Context, MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";
import type { AppEnv } from "../auth";
import { logRequest } from "../log";

const REQUEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/** The template of the route that answered, `/api/v1/runs/:id`; middleware ("ALL") is not a route. */
function routeTemplate(c: Context): string {
  const route = matchedRoutes(c).filter((r) => r.method !== "ALL").at(-1);
  return route?.path ?? "unmatched";
}

export function requestLog(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = Date.now();
    const incoming = c.req.header("X-Request-Id");
    const requestId = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    c.set("requestId", requestId);
    await next();
    c.header("X-Request-Id", requestId);
    logRequest({
      request_id: requestId,
      tenant: c.get("tenant") ?? null,
      method: c.req.method,
      route: routeTemplate(c),
      status: c.res.status,
      duration_ms: Date.now() - started,
      job_id: c.get("jobId") ?? null,
    });
  };
}
