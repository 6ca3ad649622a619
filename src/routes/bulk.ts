/**
 * /api/v1/runs/bulk: cancel or delete many jobs at once, by filter or by ids. The request records
 * the matched jobs in a bulk operation's own object and answers; its alarm does the work in
 * batches (src/bulk/BulkObject.ts).
 */
import { Hono } from "hono";
import type { AppEnv } from "../auth";
import { limits } from "../config";
import { ApiError } from "../errors";
import { newId } from "../ids";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import type { BulkAction } from "../bulk/BulkObject";
import { matchingJobs } from "../tenant/sharded";
import { bulkAcceptedSchema, bulkBodySchema, bulkIdParamSchema, bulkProgressSchema, errorSchema, instantOf, MAX_BULK_MATCHES } from "../schemas";
import { errors, keyOnlyForbidden, requestOrigin } from "./reach";

export const bulk = new Hono<AppEnv>();
export const bulkOperations: Operation[] = [];

const BULK_ID = /^bulk_[A-Za-z0-9]{24}$/;

for (const action of ["cancel", "delete"] as const satisfies BulkAction[]) {
  bulkOperations.push({
    method: "post",
    path: `/api/v1/runs/bulk/${action}`,
    summary: `${action === "cancel" ? "Cancel" : "Delete"} the jobs a filter or a list of ids names, in the background`,
    body: bulkBodySchema,
    responses: {
      202: { json: bulkAcceptedSchema, description: "Accepted; follow it at GET /api/v1/runs/bulk/{bulk_id}" },
      400: { json: errorSchema, description: "The filter matches too many jobs" },
      403: keyOnlyForbidden("bulk operations"),
      422: errors[422],
    },
  });

  bulk.post(`/api/v1/runs/bulk/${action}`, jsonBody((env) => limits(env).maxBodyBytes), valid("json", bulkBodySchema), async (c) => {
    const body = c.req.valid("json");
    const tenant = c.get("tenant");
    let ids = body.job_ids ?? undefined;
    if (ids === undefined) {
      const filter = {
        status: body.status ?? undefined,
        session_id: body.session_id ?? undefined,
        tags: body.tags ?? undefined,
        metadata: body.metadata ?? undefined,
        created_before: body.created_before ? new Date(instantOf(body.created_before)!).toISOString() : undefined,
      };
      ids = await matchingJobs(c.env, tenant, filter, MAX_BULK_MATCHES);
      if (ids.length > MAX_BULK_MATCHES) throw new ApiError("bad_request", `The filter matches more than ${MAX_BULK_MATCHES} jobs; narrow it`);
    }
    const bulkId = newId("bulk");
    const progress = await c.env.BULKS.getByName(`${tenant}/${bulkId}`).begin(bulkId, tenant, action, body.force === true, ids);
    const url = `${requestOrigin(c)}/api/v1/runs/bulk/${bulkId}`;
    return c.json({ bulk_id: bulkId, matched: progress.matched }, 202, { Location: url });
  });
}

bulkOperations.push({
  method: "get",
  path: "/api/v1/runs/bulk/{bulk_id}",
  summary: "Progress of a bulk cancel or delete",
  params: bulkIdParamSchema,
  responses: {
    200: { json: bulkProgressSchema, description: "Its progress" },
    403: keyOnlyForbidden("bulk operations"),
    404: { json: errorSchema, description: "Unknown bulk operation" },
  },
});

bulk.get("/api/v1/runs/bulk/:bulk_id", valid("param", bulkIdParamSchema), async (c) => {
  const { bulk_id } = c.req.valid("param");
  const notFound = new ApiError("not_found", `Bulk operation not found: ${bulk_id}`);
  if (!BULK_ID.test(bulk_id)) throw notFound;
  const progress = await c.env.BULKS.getByName(`${c.get("tenant")}/${bulk_id}`).progress();
  if (!progress) throw notFound;
  return c.json(progress, 200);
});
