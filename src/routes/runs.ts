/**
 * /api/v1/runs once a job exists: list, read, stream, cancel, answer and delete. Thin handlers
 * that validate, call the job's or the tenant's object, and map; jobs come in through submit.ts
 * and retry.ts.
 */
import { Hono } from "hono";
import * as z from "zod/mini";
import { scope, type AppEnv } from "../auth";
import { limits } from "../config";
import { ApiError, unwrap } from "../errors";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { eventStream, resumeAfter } from "../http/sse";
import { valid } from "../http/validation";
import { durationSeconds } from "../run/job";
import type { ListPage } from "../tenant/listing";
import { listJobs, MAX_SHARDED_OFFSET } from "../tenant/sharded";
import { lineOfJob, projectionShards } from "../tenant/shards";
import {
  deleteQuerySchema,
  errorSchema,
  jobIdParamSchema,
  inputBodySchema,
  isTrue,
  jobSchema,
  listQuerySchema,
  listResponseSchema,
  noResultSchema,
  resultSchema,
  streamQuerySchema,
  type Job,
} from "../schemas";
import { runFilter } from "./filter";
import { bodyHash, heldAs, idempotencyHeader } from "./idempotency";
import { serveOutput } from "./output";
import { inlineResult } from "../storage/blobs";
import { errors, reachable, resultUrl, runStub, shown, tokenExpiry, withoutScope, type Ctx } from "./reach";

export const runs = new Hono<AppEnv>();
/** What the OpenAPI document says of these routes. */
export const runOperations: Operation[] = [];

/** Queued jobs with their place in line (one call to each line they wait in). */
async function withQueuePositions(c: Ctx, jobs: Job[]): Promise<Job[]> {
  const byLine = new Map<string, string[]>();
  for (const job of jobs) {
    if (job.status !== "queued") continue;
    const name = lineOfJob(c.env, c.get("tenant"), job);
    const ids = byLine.get(name) ?? [];
    ids.push(job.job_id);
    byLine.set(name, ids);
  }
  if (byLine.size === 0) return jobs;
  const answers = await Promise.all([...byLine].map(([name, ids]) => c.env.LINES.getByName(name).positions(ids)));
  const positions: Record<string, number | null> = Object.assign({}, ...answers);
  return jobs.map((j) => (j.status === "queued" ? { ...j, queue_position: positions[j.job_id] ?? null } : j));
}

// ---- list -----------------------------------------------------------------------------------

runOperations.push({
  method: "get",
  path: "/api/v1/runs",
  summary: "List runs, newest first",
  query: listQuerySchema,
  responses: {
    200: { json: listResponseSchema, description: "A page of runs" },
    400: errors[400],
    403: withoutScope("read", ", or one limited to `runs` (`Token does not allow list`)"),
    422: errors[422],
  },
});

function decodeCursor(cursor: string): number {
  let seq = NaN;
  try {
    seq = Number(atob(cursor.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    // falls through to the error below
  }
  if (!Number.isSafeInteger(seq) || seq < 1) throw new ApiError("bad_request", "Invalid cursor");
  return seq;
}

const encodeCursor = (seq: number) => btoa(String(seq)).replace(/=+$/, "");

runs.get("/api/v1/runs", scope("read"), valid("query", listQuerySchema), async (c) => {
  const query = c.req.valid("query");
  const filter = runFilter(c, "list");
  const page = query.page ?? 1;
  const page_size = query.page_size ?? 20;
  const before = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
  let result: ListPage = { jobs: [], seqs: [], total: 0, next: null };
  if (filter !== null) {
    if (before === undefined && page * page_size > MAX_SHARDED_OFFSET && projectionShards(c.env) > 1) {
      throw new ApiError("bad_request", `page × page_size may be at most ${MAX_SHARDED_OFFSET} here; page on with cursor`);
    }
    const labelled = filter.tags !== undefined || filter.metadata !== undefined;
    result = await listJobs(c.env, c.get("tenant"), { ...filter, page, page_size, before }, labelled);
  }
  return c.json(
    { jobs: await withQueuePositions(c, result.jobs), total: result.total, page, page_size, next_cursor: result.next === null ? null : encodeCursor(result.next) },
    200,
  );
});

// ---- one run --------------------------------------------------------------------------------

runOperations.push({
  method: "get",
  path: "/api/v1/runs/{id}",
  summary: "Status of a run",
  params: jobIdParamSchema,
  responses: { 200: { json: jobSchema, description: "The job" }, 403: withoutScope("read"), 404: errors[404] },
});

runs.get("/api/v1/runs/:id", scope("read"), valid("param", jobIdParamSchema), async (c) => {
  const { id } = c.req.valid("param");
  const job = shown(c, unwrap(await runStub(c, id).get()).job);
  const [positioned] = await withQueuePositions(c, [job]);
  return c.json(positioned, 200);
});

runOperations.push({
  method: "get",
  path: "/api/v1/runs/{id}/result",
  summary: "Result of a succeeded run",
  params: jobIdParamSchema,
  responses: {
    200: { json: resultSchema, description: "The result" },
    400: { json: noResultSchema, description: "The job has not succeeded (a failed job's `error` beside `detail`)" },
    403: withoutScope("read"),
    404: errors[404],
  },
});

runs.get("/api/v1/runs/:id/result", scope("read"), valid("param", jobIdParamSchema), async (c) => {
  const { id } = c.req.valid("param");
  const { job, parts } = unwrap(await runStub(c, id).output());
  shown(c, job);
  switch (job.status) {
    case "queued":
    case "running":
    case "awaiting_input":
      throw new ApiError("invalid_state", `Job is still ${job.status}. Current status: ${job.status}`);
    case "failed":
      throw new ApiError("invalid_state", "Job failed. No result available.", { error: job.error });
    case "cancelled":
      throw new ApiError("invalid_state", "Job was cancelled. No result available.");
  }
  const result = await inlineResult(c.env.OUTPUTS, parts, limits(c.env).inlineResultBytes);
  return c.json(
    {
      job_id: job.job_id,
      status: job.status,
      result,
      result_url: resultUrl(c, id),
      duration_seconds: durationSeconds(job),
      created_at: job.created_at,
      started_at: job.started_at,
      completed_at: job.completed_at,
      error: null,
    },
    200,
  );
});

runOperations.push({
  method: "get",
  path: "/api/v1/runs/{id}/output",
  summary: "The run's output text, streamed (Range and HEAD supported)",
  params: jobIdParamSchema,
  responses: {
    200: { description: "The output", media: "text/plain" },
    206: { description: "A byte range of the output", media: "text/plain" },
    304: { description: "Not modified: If-None-Match names the output's ETag" },
    403: withoutScope("read"),
    404: errors[404],
    412: { json: errorSchema, description: "If-Match does not name the output's ETag" },
    416: { json: errorSchema, description: "The range is outside the output" },
  },
});

runs.get("/api/v1/runs/:id/output", scope("read"), async (c) => {
  const id = c.req.param("id");
  const { job, parts } = unwrap(await runStub(c, id).output());
  shown(c, job);
  if (parts.length === 0) throw new ApiError("not_found", `No output for job: ${id}`);
  return serveOutput(c, job, parts);
});

runOperations.push({
  method: "get",
  path: "/api/v1/runs/{id}/stream",
  summary: "Server-Sent Events of the run's progress; resumable with Last-Event-ID or ?after=",
  params: jobIdParamSchema,
  query: streamQuerySchema,
  responses: {
    200: {
      description: "An event stream ending in `data: [DONE]` (with format=named: ending in `event: result`) when the run ends. The reference page's \"Try it out\" shows it only then: watch it live with `curl -N` or an EventSource",
      media: "text/event-stream",
    },
    400: errors[400],
    403: withoutScope("stream"),
    404: errors[404],
  },
});

runs.get("/api/v1/runs/:id/stream", scope("stream"), valid("param", jobIdParamSchema), valid("query", streamQuerySchema), async (c) => {
  const { id } = c.req.valid("param");
  const position = resumeAfter(c.req.header("Last-Event-ID"), c.req.valid("query").after) ?? "0";
  if (!/^\d{1,15}$/.test(position.trim())) throw new ApiError("bad_request", `Invalid event id: ${position}`);
  const named = c.req.valid("query").format === "named" ? { resultUrl: resultUrl(c, id) } : undefined;
  const stub = await reachable(c, id);
  if (c.req.method === "HEAD") {
    unwrap(await stub.get());
    return eventStream(null);
  }
  const { body } = unwrap(await stub.stream(Number(position), named));
  return eventStream(body, tokenExpiry(c));
});

runOperations.push({
  method: "post",
  path: "/api/v1/runs/{id}/cancel",
  summary: "Cancel a queued or running run",
  params: jobIdParamSchema,
  responses: { 200: { json: jobSchema, description: "The cancelled job" }, 400: errors[400], 403: withoutScope("cancel"), 404: errors[404] },
});

runs.post("/api/v1/runs/:id/cancel", scope("cancel"), valid("param", jobIdParamSchema), async (c) => {
  const { id } = c.req.valid("param");
  const { job } = unwrap(await (await reachable(c, id)).cancel());
  return c.json(job, 200);
});

runOperations.push({
  method: "post",
  path: "/api/v1/runs/{id}/input",
  summary: "Answer a run awaiting input: approve, revise or reject the step's answer",
  params: jobIdParamSchema,
  headers: () => z.object({ "idempotency-key": z.optional(z.string()) }),
  body: inputBodySchema,
  responses: {
    200: { json: jobSchema, description: "The job after the answer (with `Idempotent-Replayed: true`: an answer given before under this key)" },
    400: { json: errorSchema, description: "A malformed Idempotency-Key" },
    403: withoutScope("input"),
    404: errors[404],
    409: { json: errorSchema, description: "The job is not awaiting input (it was answered, or never asked), or the idempotency key was used for another answer" },
    422: errors[422],
  },
});

runs.post("/api/v1/runs/:id/input", scope("input"), valid("param", jobIdParamSchema), jsonBody((env) => limits(env).maxBodyBytes), valid("json", inputBodySchema), async (c) => {
  const { id } = c.req.valid("param");
  const body = c.req.valid("json");
  // With an idempotency key, an answer sent again (its reply lost) is answered with the job, not given twice.
  const key = heldAs(c, idempotencyHeader(c));
  const { job, replayed } = unwrap(await (await reachable(c, id)).input(body, key === null ? null : { key, hash: await bodyHash(body) }));
  if (replayed) c.header("Idempotent-Replayed", "true");
  return c.json(job, 200);
});

runOperations.push({
  method: "delete",
  path: "/api/v1/runs/{id}",
  summary: "Delete a finished run and everything it stored",
  params: jobIdParamSchema,
  query: deleteQuerySchema,
  responses: {
    204: { description: "Deleted" },
    400: errors[400],
    403: withoutScope("delete"),
    404: errors[404],
    422: errors[422],
    500: { json: errorSchema, description: "Purging failed; the job is gone and the purge is retried" },
  },
});

runs.delete("/api/v1/runs/:id", scope("delete"), valid("param", jobIdParamSchema), valid("query", deleteQuerySchema), async (c) => {
  const { id } = c.req.valid("param");
  const force = isTrue(c.req.valid("query").force);
  unwrap(await (await reachable(c, id)).delete(force));
  return c.body(null, 204);
});
