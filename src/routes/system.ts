/** Service-level routes: health, the caller's stats. */
import { createRoute, OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../auth";
import { activeRunnerName } from "../runners";
import { HealthSchema, StatsSchema } from "../schemas";

export const system = new OpenAPIHono<AppEnv>();

system.openapi(
  createRoute({
    method: "get",
    path: "/health",
    summary: "Liveness and the active runner",
    responses: { 200: { content: { "application/json": { schema: HealthSchema } }, description: "Healthy" } },
  }),
  (c) => c.json({ status: "healthy" as const, runner: activeRunnerName(c.env) }, 200),
);

system.openapi(
  createRoute({
    method: "get",
    path: "/stats",
    summary: "Counts of the caller's jobs by status",
    responses: { 200: { content: { "application/json": { schema: StatsSchema } }, description: "Counts" } },
  }),
  async (c) => c.json(await c.env.PROJECTIONS.getByName(c.var.tenant).stats(), 200),
);
