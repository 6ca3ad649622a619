/** /api/v1/runs: thin handlers that validate, call the job's or the tenant's object, and map. */
import { Hono, type Context } from "hono";
import * as z from "zod/mini";
import { scope, type AppEnv } from "../auth";
import { allowPrivateWebhooks, limits } from "../config";
import { webhookSigningProblem } from "../settings";
import { webhookUrlProblem } from "../webhooks/targets";
import { hex, sha256 } from "../digest";
import { ApiError, jobNotFound, misconfigured, raise, unwrap } from "../errors";
import { isJobId, runObjectName } from "../ids";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import { durationSeconds, placeRequest, POLL_INTERVAL_S, tenantObjects, type CopiedStep, type RunSpec } from "../run/job";
import type { FinishedPart } from "../run/store";
import type { Status } from "../run/transitions";
import type { AdmitResult, ListPage } from "../tenant/TenantProjection";
import { listJobs, MAX_SHARDED_OFFSET } from "../tenant/sharded";
import { lineOfJob, placeJob, projectionOfKey, projectionShards } from "../tenant/shards";
import { planRun } from "../runners";
import { resolveAgent } from "../runners/agents";
import {
  DEFAULT_INPUT_TIMEOUT_S,
  DEFAULT_PRIORITY,
  DEFAULT_TIMEOUT_S,
  deleteQuerySchema,
  errorSchema,
  jobIdParamSchema,
  inputBodySchema,
  jobSchema,
  listQuerySchema,
  listResponseSchema,
  resultSchema,
  retryBodySchema,
  streamQuerySchema,
  submitBodySchema,
  submitResponseSchema,
  type Job,
  type SubmitBody,
} from "../schemas";
import { reaches, reachNeedsJob } from "../tokens";
import { runFilter } from "./filter";
import { serveOutput } from "./output";
import { copyPart, inlineResult, outputPrefix, partKey, purgePrefix } from "../storage/blobs";

type Ctx = Context<AppEnv>;

const errors = {
  400: { json: errorSchema, description: "Not possible in the job's current state, or a malformed request" },
  404: { json: errorSchema, description: "Unknown job" },
  422: { json: errorSchema, description: "The request breaks the schema" },
};

export const runs = new Hono<AppEnv>();
/** What the OpenAPI document says of these routes. */
export const runOperations: Operation[] = [];

// ---- helpers ----------------------------------------------------------------------------

/** The job's object; an id that can name no job is answered as an unknown one. */
function runStub(c: Ctx, id: string) {
  c.set("jobId", id);
  if (!isJobId(id)) throw raise(jobNotFound(id));
  return c.env.RUNS.getByName(runObjectName(c.get("tenant"), id));
}

/**
 * The job's object, for a request that acts on it: a job outside the token's reach is answered
 * as an unknown one, before anything is done. Reach is decided by the job's session and tags,
 * which never change once it is submitted.
 */
async function reachable(c: Ctx, id: string) {
  const stub = runStub(c, id);
  const grant = c.get("token");
  if (grant === null) return stub;
  if (grant.runs && !grant.runs.includes(id)) throw raise(jobNotFound(id));
  if (reachNeedsJob(grant)) {
    const current = await stub.get();
    if (!current.ok || !reaches(grant, current.job)) throw raise(jobNotFound(id));
  }
  return stub;
}

/** A job read for a request: one outside the token's reach is answered as an unknown one. */
function shown<T extends { job_id: string; session_id: string | null; tags?: string[] }>(c: Ctx, job: T): T {
  const grant = c.get("token");
  if (grant !== null && !reaches(grant, job)) throw raise(jobNotFound(job.job_id));
  return job;
}

/** The tenant's projection shard that holds an idempotency key or counts a token's submits. */
const projectionOf = (c: Ctx, key: string) => c.env.PROJECTIONS.getByName(projectionOfKey(c.env, c.get("tenant"), key));
/** A job's projection shard and line, as its spec names them. */
const projectionFor = (c: Ctx, spec: RunSpec) => c.env.PROJECTIONS.getByName(tenantObjects(spec).projection);
const lineFor = (c: Ctx, spec: RunSpec) => c.env.LINES.getByName(tenantObjects(spec).line);

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

runOperations.push({
  method: "post",
  path: "/api/v1/runs",
  summary: "Submit a run",
  headers: () => z.object({ "idempotency-key": z.optional(z.string()) }),
  body: submitBodySchema,
  responses: {
    202: { json: submitResponseSchema, description: "Accepted; poll `poll_url`" },
    400: errors[400],
    409: { json: errorSchema, description: "The idempotency key names a job submitted with another body" },
    413: { json: errorSchema, description: "Body over the size limit" },
    422: errors[422],
    429: { json: errorSchema, description: "The tenant holds as many queued jobs as it may; retry after Retry-After" },
  },
});

/** Seconds a client refused for a full line is asked to wait. */
const QUEUE_FULL_RETRY_S = 30;

/** Everything fixed at submit: the checked webhook target, the agent, the runner and its steps. */
function specFor(c: Ctx, body: SubmitBody, key: string | null, now: number): RunSpec {
  if (body.webhook_url) {
    mustSignWebhooks(c);
    const problem = webhookUrlProblem(body.webhook_url, allowPrivateWebhooks(c.env));
    if (problem) throw new ApiError("validation", [{ loc: ["body", "webhook_url"], msg: problem, type: "value_error" }]);
  }
  // A recipe's config overrides the job's own keys.
  const config = { ...(body.config ?? {}), ...(body.recipe_config ?? {}) };
  const agent = resolveAgent(body);
  const plan = planRun(c.env, config, agent.tasks);
  return {
    ...placeJob(c.env, c.get("tenant"), { idempotency_key: key, concurrency_key: body.concurrency_key ?? null }),
    tenant: c.get("tenant"),
    created_at: now,
    prompt: body.prompt,
    agent_id: agent.agent_id,
    runner: plan.runner,
    tasks: plan.tasks,
    agent: plan.agent,
    session_id: body.session_id ?? null,
    metadata: body.metadata ?? {},
    tags: [...new Set(body.tags ?? [])],
    config,
    timeout_s: body.timeout || DEFAULT_TIMEOUT_S,
    retention_ms: body.retention_seconds ? body.retention_seconds * 1000 : null,
    webhook_url: body.webhook_url ?? null,
    idempotency_key: key,
    priority: body.priority ?? DEFAULT_PRIORITY,
    concurrency_key: body.concurrency_key ?? null,
    scheduled_for: startTime(body, now),
    queue_ttl_s: body.queue_ttl_seconds ?? null,
    request_id: c.get("requestId"),
    input_timeout_s: body.input_timeout_s ?? DEFAULT_INPUT_TIMEOUT_S,
    retry_of: null,
  };
}

/** A job with a webhook_url is made only where webhooks are signed: 503 naming the missing secret otherwise. */
function mustSignWebhooks(c: Ctx): void {
  const unsigned = webhookSigningProblem(c.env);
  if (unsigned) throw misconfigured(unsigned);
}

/** When a delayed job may start: null for none, and for a `start_after` already past. */
function startTime(body: SubmitBody, now: number): number | null {
  if (body.delay_seconds) return now + body.delay_seconds * 1000;
  if (body.start_after) {
    const at = Date.parse(body.start_after);
    return at > now ? at : null;
  }
  return null;
}

/** Submit: the job's spec, fixed now, then its way in (`enter`). */
runs.post("/api/v1/runs", scope("submit"), jsonBody((env) => limits(env).maxBodyBytes), valid("json", submitBodySchema), async (c) => {
  const body = tokenized(c, c.req.valid("json"));
  const key = idempotencyKey(c, body);
  const hash = key === null ? null : await bodyHash(body);
  const now = Date.now();
  const held = key === null ? undefined : async () => {
    const holder = await projectionOf(c, key).keyHolder(key, hash);
    return holder && replay(c, holder, now);
  };
  return spending(c, () => enter(c, specFor(c, body, key, now), hash, now), held);
});

/** A job submitted with a token joins the token's session and carries its tags, so that the token reaches it. */
function tokenized<T extends { session_id?: string | null; tags?: string[] | null }>(c: Ctx, body: T): T {
  const grant = c.get("token");
  if (grant === null) return body;
  return { ...body, ...(grant.session_id !== null ? { session_id: grant.session_id } : {}), ...(grant.tags ? { tags: grant.tags } : {}) };
}

/**
 * A token's submit, counted against its `max_submits` before the job is made, and given back
 * when no new job came of it (a failure, or an idempotent replay of an earlier one). Past the
 * limit, a submit whose idempotency key names an earlier job (`held`) is still answered with it.
 */
async function spending(c: Ctx, submit: () => Promise<Response>, held?: () => Promise<Response | null>): Promise<Response> {
  const grant = c.get("token");
  if (grant === null) return submit();
  if (!(await projectionOf(c, grant.id).spendSubmit(grant.id, grant.max_submits ?? 0, grant.expires * 1000))) {
    const replayed = held && (await held());
    if (replayed) return replayed;
    throw new ApiError("forbidden", "Token submit limit reached");
  }
  let made = false;
  try {
    const response = await submit();
    made = response.headers.get("Idempotent-Replayed") === null;
    return response;
  } finally {
    if (!made) await projectionOf(c, grant.id).refundSubmit(grant.id);
  }
}

/**
 * A new job's way in: a place in the tenant's line (refused past its queued limit, storing
 * nothing), then the job's object (running at once when the line granted a slot, with the steps
 * a retry copied already done), then its registration with the projection, which may find the
 * idempotency key taken: then the new job is discarded and the one holding the key answers.
 */
async function enter(c: Ctx, spec: RunSpec, hash: string | null, now: number, copied: CopiedStep[] = []) {
  const key = spec.idempotency_key;
  const place = await lineFor(c, spec).join(placeRequest(spec));
  if (!place.ok) {
    const holder = key === null ? null : await projectionOf(c, key).keyHolder(key, hash);
    if (holder) return replay(c, holder, now);
    throw new ApiError("queue_full", `Too many queued jobs for this tenant (limit ${place.limit})`, {}, { "Retry-After": String(QUEUE_FULL_RETRY_S) });
  }

  const run = runStub(c, spec.job_id);
  let created: { job: Job; version: number };
  try {
    created = unwrap(await run.create(spec, place.granted, copied));
  } catch (error) {
    await lineFor(c, spec).leave(spec.job_id);
    throw error;
  }
  let admission: AdmitResult;
  try {
    admission = await projectionFor(c, spec).admit({ job: created.job, version: created.version, idempotency_key: key, body_hash: hash });
  } catch (error) {
    await run.discard();
    throw error;
  }
  if (!admission.admitted) {
    await run.discard();
    return replay(c, admission, now);
  }
  return accepted(c, spec.job_id, created.job.status, created.job.created_at);
}

/** The answer to a submit whose idempotency key names an earlier job. */
async function replay(c: Ctx, held: Extract<AdmitResult, { admitted: false }>, now: number) {
  const current = await runStub(c, held.job_id).get();
  const job = current.ok ? current.job : held.job;
  const status = job?.status ?? "queued";
  if (!held.same_body) {
    const message = "Job already exists with this idempotency key";
    throw new ApiError("idempotency_conflict", message, { job_id: held.job_id, status, message });
  }
  c.header("Idempotent-Replayed", "true");
  return accepted(c, held.job_id, status, job?.created_at ?? new Date(now).toISOString());
}

function accepted(c: Ctx, id: string, status: Status, createdAt: string) {
  const poll = pollUrl(c, id);
  c.header("Location", poll);
  c.header("Retry-After", String(POLL_INTERVAL_S));
  return c.json({ job_id: id, status, created_at: createdAt, poll_url: poll, stream_url: `${poll}/stream` }, 202);
}

// ---- list -----------------------------------------------------------------------------------

runOperations.push({
  method: "get",
  path: "/api/v1/runs",
  summary: "List runs, newest first",
  query: listQuerySchema,
  responses: { 200: { json: listResponseSchema, description: "A page of runs" }, 400: errors[400], 422: errors[422] },
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
  responses: { 200: { json: jobSchema, description: "The job" }, 404: errors[404] },
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
  responses: { 200: { json: resultSchema, description: "The result" }, 400: errors[400], 404: errors[404] },
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

runOperations.push({
  method: "get",
  path: "/api/v1/runs/{id}/output",
  summary: "The run's output text, streamed (Range and HEAD supported)",
  params: jobIdParamSchema,
  responses: {
    200: { description: "The output", media: "text/plain" },
    206: { description: "A byte range of the output", media: "text/plain" },
    404: errors[404],
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
    200: { description: "An event stream ending in `data: [DONE]` (with format=named: ending in `event: result`)", media: "text/event-stream" },
    400: errors[400],
    404: errors[404],
  },
});

runs.get("/api/v1/runs/:id/stream", scope("stream"), valid("param", jobIdParamSchema), valid("query", streamQuerySchema), async (c) => {
  const { id } = c.req.valid("param");
  const position = c.req.valid("query").after ?? c.req.header("Last-Event-ID") ?? "0";
  if (!/^\d{1,15}$/.test(position.trim())) throw new ApiError("bad_request", `Invalid event id: ${position}`);
  const named = c.req.valid("query").format === "named" ? { resultUrl: `${pollUrl(c, id)}/output` } : undefined;
  const { body } = unwrap(await (await reachable(c, id)).stream(Number(position), named));
  return new Response(body, {
    headers: {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache",
      "X-Accel-Buffering": "no",
    },
  });
});

runOperations.push({
  method: "post",
  path: "/api/v1/runs/{id}/cancel",
  summary: "Cancel a queued or running run",
  params: jobIdParamSchema,
  responses: { 200: { json: jobSchema, description: "The cancelled job" }, 400: errors[400], 404: errors[404] },
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
  body: inputBodySchema,
  responses: {
    200: { json: jobSchema, description: "The job after the answer" },
    404: errors[404],
    409: { json: errorSchema, description: "The job is not awaiting input (it was answered, or never asked)" },
    422: errors[422],
  },
});

runs.post("/api/v1/runs/:id/input", scope("input"), valid("param", jobIdParamSchema), jsonBody((env) => limits(env).maxBodyBytes), valid("json", inputBodySchema), async (c) => {
  const { id } = c.req.valid("param");
  const { job } = unwrap(await (await reachable(c, id)).input(c.req.valid("json")));
  return c.json(job, 200);
});

runOperations.push({
  method: "post",
  path: "/api/v1/runs/{id}/retry",
  summary: "Retry a failed or cancelled run from its first unfinished step (or from_step), as a new run",
  params: jobIdParamSchema,
  body: retryBodySchema,
  responses: {
    202: { json: submitResponseSchema, description: "The new run, with retry_of naming this one" },
    400: errors[400],
    404: errors[404],
    422: errors[422],
    429: { json: errorSchema, description: "The tenant holds as many queued jobs as it may; retry after Retry-After" },
  },
});

/**
 * Retry: a new job with the old one's spec (prompt and config keys replaced where the body
 * says), whose steps before `from_step` are the old job's outputs, copied under its own prefix
 * before it exists, so that deleting either job later never touches the other.
 */
runs.post(
  "/api/v1/runs/:id/retry",
  scope("submit"),
  valid("param", jobIdParamSchema),
  jsonBody((env) => limits(env).maxBodyBytes, { optional: true }),
  valid("json", retryBodySchema),
  async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    // The spec's config holds `unknown` values, which RPC's return typing cannot express.
    const source = unwrap(await (await reachable(c, id)).retrySource()) as unknown as { spec: RunSpec; parts: FinishedPart[] };
    // The deployment may have lost its signing secret since the old job was made.
    if (source.spec.webhook_url) mustSignWebhooks(c);
    const firstUnfinished = source.parts.length + 1;
    const from = body.from_step ?? firstUnfinished;
    if (from > firstUnfinished) throw new ApiError("bad_request", `from_step must be at most ${firstUnfinished}, the first unfinished step`);
    const now = Date.now();
    const spec: RunSpec = {
      ...tokenized(c, source.spec),
      ...placeJob(c.env, c.get("tenant"), { idempotency_key: null, concurrency_key: source.spec.concurrency_key }),
      created_at: now,
      prompt: body.prompt ?? source.spec.prompt,
      config: { ...source.spec.config, ...(body.config ?? {}) },
      idempotency_key: null,
      scheduled_for: null,
      request_id: c.get("requestId"),
      retry_of: id,
    };
    const prefix = outputPrefix(spec.tenant, spec.job_id);
    const copied: CopiedStep[] = [];
    try {
      for (const part of source.parts.filter((p) => p.idx < from)) {
        copied.push({ ...(await copyPart(c.env.OUTPUTS, part, partKey(prefix, part.idx))), idx: part.idx, note: part.note });
      }
      return await spending(c, () => enter(c, spec, null, now, copied));
    } catch (error) {
      // Nothing of a retry that did not happen is kept; an old job deleted meanwhile is gone.
      if (copied.length > 0) await purgePrefix(c.env.OUTPUTS, prefix);
      if (!(await runStub(c, id).get()).ok) throw raise(jobNotFound(id));
      throw error;
    }
  },
);

runOperations.push({
  method: "delete",
  path: "/api/v1/runs/{id}",
  summary: "Delete a finished run and everything it stored",
  params: jobIdParamSchema,
  query: deleteQuerySchema,
  responses: {
    204: { description: "Deleted" },
    400: errors[400],
    404: errors[404],
    422: errors[422],
    500: { json: errorSchema, description: "Purging failed; the job is gone and the purge is retried" },
  },
});

runs.delete("/api/v1/runs/:id", scope("delete"), valid("param", jobIdParamSchema), valid("query", deleteQuerySchema), async (c) => {
  const { id } = c.req.valid("param");
  const force = c.req.valid("query").force === "true";
  unwrap(await (await reachable(c, id)).delete(force));
  return c.body(null, 204);
});
