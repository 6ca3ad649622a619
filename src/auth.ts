/** Who is calling: the tenant every request acts for. */
import type { MiddlewareHandler } from "hono";
import { DEFAULT_TENANT } from "./config";

export type AppEnv = { Bindings: Env; Variables: { tenant: string } };

export function tenancy(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    c.set("tenant", DEFAULT_TENANT);
    await next();
  };
}
