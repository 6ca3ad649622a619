/** Service-level routes: health and the build's version, the caller's stats. */
import { Hono } from "hono";
import type { AppEnv } from "../auth";
import type { Operation } from "../http/openapi";
import { activeRunnerName } from "../runners/choice";
import { healthSchema, statsSchema } from "../schemas";
import { tenantStats } from "../tenant/sharded";
import { buildVersion } from "../version";
import { keyOnlyForbidden } from "./reach";

export const system = new Hono<AppEnv>();
export const systemOperations: Operation[] = [];

systemOperations.push({
  method: "get",
  path: "/health",
  summary: "Liveness, the active runner and the build's version",
  responses: { 200: { json: healthSchema, description: "Healthy" } },
  open: true,
});

system.get("/health", (c) => c.json({ status: "healthy" as const, runner: activeRunnerName(c.env), version: buildVersion(c.env) }, 200));

systemOperations.push({
  method: "get",
  path: "/stats",
  summary: "Counts of the caller's jobs by status",
  responses: { 200: { json: statsSchema, description: "Counts" }, 403: keyOnlyForbidden("stats") },
});

system.get("/stats", async (c) => c.json(await tenantStats(c.env, c.get("tenant")), 200));
