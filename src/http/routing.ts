/**
 * What a request that no route serves is told, as FastAPI (Starlette's router) tells it: a path
 * the API has, asked with another method → 405 with `Allow`; a known path with a trailing slash
 * → 307 to it without the slash (a client that writes `/api/v1/runs/` works against PraisonAI's
 * server through that redirect, and so it does here); anything else → 404.
 */
import type { Context } from "hono";

interface Route {
  pattern: RegExp;
  method: string;
}

/**
 * The routes an app registered (Hono's `app.routes`, read once all are), as patterns: `:name` is
 * one path segment; middleware (method `ALL`) is no route.
 */
export function routesOf(registered: readonly { method: string; path: string }[]): Route[] {
  return registered
    .filter((r) => r.method !== "ALL")
    .map(({ method, path }) => ({
      pattern: new RegExp(`^${path.replace(/[.*+?^$()|[\]\\{}]/g, "\\$&").replace(/:\w+/g, "[^/]+")}$`),
      method,
    }));
}

/** The methods the API serves at `path`, HEAD with GET; none when it has no such path. */
function methodsAt(routes: Route[], path: string): string[] {
  const methods = new Set(routes.filter((r) => r.pattern.test(path)).map((r) => r.method));
  if (methods.has("GET")) methods.add("HEAD");
  return [...methods].sort();
}

export function unrouted(c: Context, routes: Route[]): Response {
  const { path } = c.req;
  const methods = methodsAt(routes, path);
  if (methods.length > 0) return c.json({ detail: "Method Not Allowed" }, 405, { Allow: methods.join(", ") });
  if (path.length > 1 && path.endsWith("/") && methodsAt(routes, path.slice(0, -1)).includes(c.req.method)) {
    const url = new URL(c.req.url);
    url.pathname = url.pathname.slice(0, -1);
    return c.body(null, 307, { Location: url.toString() });
  }
  return c.json({ detail: "Not Found" }, 404);
}
