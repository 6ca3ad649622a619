/** /api/v1/runs: thin handlers that validate, call the job's or the tenant's object, and map. */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { allowPrivateWebhooks, limits } from "../config";
import { webhookUrlProblem } from "../webhooks/targets";
import { hex, sha256 } from "../digest";
import { ApiError, unwrap, type Result } from "../errors";
import { isJobId, newJobId, runObjectName } from "../ids";
import { jsonBody } from "../http/body";
import { durationSeconds, initialRow, toJob, POLL_INTERVAL_S, type RunSpec } from "../run/job";
import { isStatus, STATUSES } from "../run/transitions";
import { planRun } from "../runners";
import { resolveAgent } from "../runners/agents";
import {
  DEFAULT_TIMEOUT_S,
  DeleteQuerySchema,
  ErrorSchema,
  JobIdParamSchema,
  JobSchema,
  ListQuerySchema,
  ListResponseSchema,
  ResultSchema,
  StreamQuerySchema,
  SubmitBodySchema,
  SubmitResponseSchema,
  type SubmitBody,
} from "../schemas";
import { serveOutput } from "./output";
import { inlineResult } from "../storage/blobs";

type Ctx = Context<AppEnv>;

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});
const errors = {
  400: json(ErrorSchema, "Not possible in the job's current state, or a malformed request"),
  404: json(ErrorSchema, "Unknown job"),
  422: json(ErrorSchema, "The request breaks the schema"),
};

export const runs = new OpenAPIHono<AppEnv>();

// ---- helpers ----------------------------------------------------------------------------

function runStub(c: Ctx, id: string) {
  if (!isJobId(id)) throw new ApiError("not_found", `Job not found: ${id}`);
  return c.env.RUNS.getByName(runObjectName(c.var.tenant, id));
}

function tenantIndex(c: Ctx) {
  return c.env.TENANTS.getByName(c.var.tenant);
}

/** Unwraps a RunObject answer; its "not found" names the id the client asked for. */
function unwrapRun<T>(id: string, result: Result<T>): T {
  if (!result.ok && result.code === "not_found") throw new ApiError("not_found", `Job not found: ${id}`);
  return unwrap(result);
}

const pollUrl = (c: Ctx, id: string) => `${new URL(c.req.url).origin}/api/v1/runs/${id}`;

async function bodyHash(body: SubmitBody): Promise<string> {
  const { idempotency_key: _, ...rest } = body;
  const canonical = JSON.stringify(rest, (_key, value) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)))
      : value,
  );
  return hex(await sha256(canonical));
}

function idempotencyKey(c: Ctx, body: SubmitBody): string | null {
  const header = c.req.header("Idempotency-Key");
  if (header !== undefined && (header.length === 0 || header.length > 256)) {
    throw new ApiError("bad_request", "Idempotency-Key must be 1 to 256 characters");
  }
  // Repeated headers arrive joined by ", ": which one was meant cannot be told.
  if (header?.includes(",")) throw new ApiError("bad_request", "Idempotency-Key must be sent once, without commas");
  return header ?? body.idempotency_key ?? null;
}

// ---- submit -------------------------------------------------------------------------------

const submitRoute = createRoute({
  method: "post",
  path: "/api/v1/runs",
  summary: "Submit a run",
  middleware: [jsonBody((env) => limits(env).maxBodyBytes)] as const,
  request: {
    headers: z.object({ "idempotency-key": z.string().optional() }),
    body: { content: { "application/json": { schema: SubmitBodySchema } }, required: true },
  },
  responses: {
    202: json(SubmitResponseSchema, "Accepted; poll `poll_url`"),
    400: errors[400],
    409: json(ErrorSchema, "The idempotency key names a job submitted with another body"),
    413: json(ErrorSchema, "Body over the size limit"),
    422: errors[422],
  },
});

/** Everything fixed at submit: the checked webhook target, the agent, the runner and its steps. */
function specFor(c: Ctx, body: SubmitBody, key: string | null, now: number): RunSpec {
  if (body.webhook_url) {
    const problem = webhookUrlProblem(body.webhook_url, allowPrivateWebhooks(c.env));
    if (problem) throw new ApiError("validation", [{ loc: ["body", "webhook_url"], msg: problem, type: "value_error" }]);
  }
  const config = body.config ?? {};
  const agent = resolveAgent(body);
  const plan = planRun(c.env, config, agent.tasks);
  return {
    job_id: newJobId(),
    tenant: c.var.tenant,
    created_at: now,
    prompt: body.prompt,
    agent_id: agent.agent_id,
    runner: plan.runner,
    tasks: plan.tasks,
    agent: plan.agent,
    session_id: body.session_id ?? null,
    metadata: body.metadata ?? {},
    config,
    timeout_s: body.timeout || DEFAULT_TIMEOUT_S,
    retention_ms: body.retention_seconds ? body.retention_seconds * 1000 : null,
    webhook_url: body.webhook_url ?? null,
    idempotency_key: key,
  };
}

runs.openapi(submitRoute, async (c) => {
  const body = c.req.valid("json");
  const key = idempotencyKey(c, body);
  const now = Date.now();
  const spec = specFor(c, body, key, now);
  const index = tenantIndex(c);
  const admission = await index.admit({
    job: toJob(spec, initialRow(spec)),
    idempotency_key: key,
    body_hash: key === null ? null : await bodyHash(body),
  });

  if (!admission.admitted) {
    const current = await runStub(c, admission.job_id).get();
    const job = current.ok ? current.job : admission.job;
    const status = job?.status ?? "queued";
    if (!admission.same_body) {
      const message = "Job already exists with this idempotency key";
      throw new ApiError("idempotency_conflict", message, { job_id: admission.job_id, status, message });
    }
    c.header("Idempotent-Replayed", "true");
    return accepted(c, admission.job_id, status, job?.created_at ?? new Date(now).toISOString());
  }

  try {
    unwrap(await runStub(c, spec.job_id).create(spec));
  } catch (error) {
    await index.forget(spec.job_id);
    throw error;
  }
  return accepted(c, spec.job_id, "queued", new Date(now).toISOString());
});

function accepted(c: Ctx, id: string, status: (typeof STATUSES)[number], createdAt: string) {
  const poll = pollUrl(c, id);
  c.header("Location", poll);
  c.header("Retry-After", String(POLL_INTERVAL_S));
  return c.json({ job_id: id, status, created_at: createdAt, poll_url: poll, stream_url: `${poll}/stream` }, 202);
}

// ---- list -----------------------------------------------------------------------------------

const listRoute = createRoute({
  method: "get",
  path: "/api/v1/runs",
  summary: "List runs, newest first",
  request: { query: ListQuerySchema },
  responses: { 200: json(ListResponseSchema, "A page of runs"), 400: errors[400], 422: errors[422] },
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

runs.openapi(listRoute, async (c) => {
  const query = c.req.valid("query");
  if (query.status !== undefined && !isStatus(query.status)) {
    throw new ApiError("bad_request", `Invalid status: ${query.status}. Valid values: [${STATUSES.map((s) => `'${s}'`).join(", ")}]`);
  }
  const page = query.page ?? 1;
  const page_size = query.page_size ?? 20;
  const result = await tenantIndex(c).list({
    status: query.status as (typeof STATUSES)[number] | undefined,
    session_id: query.session_id,
    page,
    page_size,
    before: query.cursor === undefined ? undefined : decodeCursor(query.cursor),
  });
  return c.json(
    { jobs: result.jobs, total: result.total, page, page_size, next_cursor: result.next === null ? null : encodeCursor(result.next) },
    200,
  );
});

// ---- one run --------------------------------------------------------------------------------

const getRoute = createRoute({
  method: "get",
  path: "/api/v1/runs/{id}",
  summary: "Status of a run",
  request: { params: JobIdParamSchema },
  responses: { 200: json(JobSchema, "The job"), 404: errors[404] },
});

runs.openapi(getRoute, async (c) => {
  const { id } = c.req.valid("param");
  const { job } = unwrapRun(id, await runStub(c, id).get());
  return c.json(job, 200);
});

const resultRoute = createRoute({
  method: "get",
  path: "/api/v1/runs/{id}/result",
  summary: "Result of a succeeded run",
  request: { params: JobIdParamSchema },
  responses: { 200: json(ResultSchema, "The result"), 400: errors[400], 404: errors[404] },
});

runs.openapi(resultRoute, async (c) => {
  const { id } = c.req.valid("param");
  const { job, parts } = unwrapRun(id, await runStub(c, id).output());
  switch (job.status) {
    case "queued":
    case "running":
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
      result_url: `${pollUrl(c, id)}/output`,
      duration_seconds: durationSeconds(job),
      created_at: job.created_at,
      started_at: job.started_at,
      completed_at: job.completed_at,
      error: null,
    },
    200,
  );
});

const outputRoute = createRoute({
  method: "get",
  path: "/api/v1/runs/{id}/output",
  summary: "The run's output text, streamed (Range and HEAD supported)",
  request: { params: JobIdParamSchema },
  responses: {
    200: { description: "The output", content: { "text/plain": { schema: z.string() } } },
    206: { description: "A byte range of the output", content: { "text/plain": { schema: z.string() } } },
    404: errors[404],
    416: json(ErrorSchema, "The range is outside the output"),
  },
});

// A raw byte stream is no typed JSON response: the route is documented, then served by plain Hono.
runs.openAPIRegistry.registerPath(outputRoute);
runs.get("/api/v1/runs/:id/output", async (c) => {
  const id = c.req.param("id");
  const { job, parts } = unwrapRun(id, await runStub(c, id).output());
  if (parts.length === 0) throw new ApiError("not_found", `No output for job: ${id}`);
  return serveOutput(c, job, parts);
});

const streamRoute = createRoute({
  method: "get",
  path: "/api/v1/runs/{id}/stream",
  summary: "Server-Sent Events of the run's progress; resumable with Last-Event-ID or ?after=",
  request: { params: JobIdParamSchema, query: StreamQuerySchema },
  responses: {
    200: { description: "An event stream ending in `data: [DONE]`", content: { "text/event-stream": { schema: z.string() } } },
    400: errors[400],
    404: errors[404],
  },
});

runs.openapi(streamRoute, async (c) => {
  const { id } = c.req.valid("param");
  const position = c.req.valid("query").after ?? c.req.header("Last-Event-ID") ?? "0";
  if (!/^\d{1,15}$/.test(position.trim())) throw new ApiError("bad_request", `Invalid event id: ${position}`);
  const { body } = unwrapRun(id, await runStub(c, id).stream(Number(position)));
  return new Response(body, {
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      "X-Accel-Buffering": "no",
    },
  });
});

const cancelRoute = createRoute({
  method: "post",
  path: "/api/v1/runs/{id}/cancel",
  summary: "Cancel a queued or running run",
  request: { params: JobIdParamSchema },
  responses: { 200: json(JobSchema, "The cancelled job"), 400: errors[400], 404: errors[404] },
});

runs.openapi(cancelRoute, async (c) => {
  const { id } = c.req.valid("param");
  const { job } = unwrapRun(id, await runStub(c, id).cancel());
  return c.json(job, 200);
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/api/v1/runs/{id}",
  summary: "Delete a finished run and everything it stored",
  request: { params: JobIdParamSchema, query: DeleteQuerySchema },
  responses: {
    204: { description: "Deleted" },
    400: errors[400],
    404: errors[404],
    422: errors[422],
    500: json(ErrorSchema, "Purging failed; the job is gone and the purge is retried"),
  },
});

runs.openapi(deleteRoute, async (c) => {
  const { id } = c.req.valid("param");
  const force = c.req.valid("query").force === "true";
  unwrapRun(id, await runStub(c, id).delete(force));
  return c.body(null, 204);
});
