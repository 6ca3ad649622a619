/**
 * The ways a job comes in: submit, and retry (a new job from an old one's spec and finished
 * steps). Each takes a place in the tenant's line, creates the job's object and registers it with
 * the tenant's projection, where an idempotency key is held (`enter`).
 */
import { Hono } from "hono";
import * as z from "zod/mini";
import { scope, type AppEnv } from "../auth";
import { allowPrivateWebhooks, limits } from "../config";
import { webhookSigningProblem } from "../settings";
import { webhookUrlProblem } from "../webhooks/targets";
import { hex, sha256 } from "../digest";
import { ApiError, jobNotFound, misconfigured, raise, unwrap } from "../errors";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import { logFailure } from "../log";
import { placeRequest, POLL_INTERVAL_S, tenantObjects, type CopiedStep, type RunSpec } from "../run/job";
import { MAX_SPEC_BYTES, specTooLarge, type FinishedPart } from "../run/store";
import type { Status } from "../run/transitions";
import type { HeldKey } from "../tenant/TenantProjection";
import { earlierProjectionOfKey, placeJob, projectionOfKey } from "../tenant/shards";
import { planRun } from "../runners";
import { agentChoice, resolveAgent } from "../runners/agents";
import type { SimulateKnobs } from "../runners/simulated";
import {
  DEFAULT_INPUT_TIMEOUT_S,
  DEFAULT_PRIORITY,
  DEFAULT_TIMEOUT_S,
  errorSchema,
  hasEntries,
  instantOf,
  jobIdParamSchema,
  MAX_METADATA_KEYS,
  retryBodySchema,
  submitBodySchema,
  submitResponseSchema,
  type SubmitBody,
} from "../schemas";
import { copyPart, outputPrefix, partKey, purgePrefix } from "../storage/blobs";
import type { Grant } from "../tokens";
import { errors, pollUrl, reachable, requestOrigin, runStub, type Ctx } from "./reach";

export const submits = new Hono<AppEnv>();
/** What the OpenAPI document says of these routes. */
export const submitOperations: Operation[] = [];

/** The tenant's projection shard that holds an idempotency key or counts a token's submits. */
const projectionOf = (c: Ctx, key: string) => c.env.PROJECTIONS.getByName(projectionOfKey(c.env, c.get("tenant"), key));
/** A job's projection shard and line, as its spec names them. */
const projectionFor = (c: Ctx, spec: RunSpec) => c.env.PROJECTIONS.getByName(tenantObjects(spec).projection);
const lineFor = (c: Ctx, spec: RunSpec) => c.env.LINES.getByName(tenantObjects(spec).line);

/**
 * The shard that held an idempotency key or a token's submit counter before PROJECTION_SHARDS was
 * last raised (PROJECTION_SHARDS_BEFORE), when that is another than its own now; else undefined.
 */
function earlierProjectionOf(c: Ctx, key: string) {
  const name = earlierProjectionOfKey(c.env, c.get("tenant"), key);
  return name === null ? undefined : c.env.PROJECTIONS.getByName(name);
}

/** What an idempotency key is held with: the request's body (for a retry, with the job it retries), keys sorted. */
async function bodyHash(body: Record<string, unknown>): Promise<string> {
  const { idempotency_key: _, ...rest } = body;
  const canonical = JSON.stringify(rest, (_key, value) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)))
      : value,
  );
  return hex(await sha256(canonical));
}

/** The `Idempotency-Key` header, checked, or null when none was sent. */
function idempotencyHeader(c: Ctx): string | null {
  const header = c.req.header("Idempotency-Key");
  if (header !== undefined && (header.length === 0 || header.length > 256)) {
    throw new ApiError("bad_request", "Idempotency-Key must be 1 to 256 characters");
  }
  // Repeated headers arrive joined by ", ": which one was meant cannot be told.
  if (header?.includes(",")) throw new ApiError("bad_request", "Idempotency-Key must be sent once, without commas");
  return header ?? null;
}

/**
 * The name an idempotency key is held under in its tenant. A token's keys are its own, apart from
 * the API key's and every other token's: a browser that sends another's key (a guessable one,
 * `order-42`) neither gets that request's job back (nor its id, in a 409) nor holds the key against it.
 */
function heldAs(c: Ctx, key: string | null): string | null {
  const grant = c.get("token");
  return key === null || grant === null ? key : `token ${grant.id} ${key}`;
}

/**
 * The answer to a request whose idempotency key an earlier job holds: that job (or 409 for another
 * body), looked for in the key's shard and where it was before the last raise; null when none holds it.
 */
function heldKey(c: Ctx, key: string | null, hash: string | null, now: number): (() => Promise<Response | null>) | undefined {
  if (key === null) return undefined;
  return async () => {
    const holder = (await projectionOf(c, key).keyHolder(key, hash)) ?? (await earlierProjectionOf(c, key)?.keyHolder(key, hash));
    return holder ? replay(c, holder, now) : null;
  };
}

// ---- submit -------------------------------------------------------------------------------

submitOperations.push({
  method: "post",
  path: "/api/v1/runs",
  summary: "Submit a run",
  headers: () => z.object({ "idempotency-key": z.optional(z.string()) }),
  body: submitBodySchema,
  responses: {
    202: { json: submitResponseSchema, description: "Accepted; poll `poll_url`" },
    400: errors[400],
    403: { json: errorSchema, description: "A scoped token without `submit`, past its `max_submits`, or sending a `webhook_url`" },
    409: { json: errorSchema, description: "The idempotency key names a job submitted with another body" },
    413: { json: errorSchema, description: "Body over the size limit, or a job too large to store" },
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
  // A recipe's config overrides the job's own keys; a token's overrides both.
  const config = { ...(body.config ?? {}), ...(body.recipe_config ?? {}), ...tokenConfig(c) };
  const agent = resolveAgent(body);
  const plan = planRun(c.env, config, agent.tasks);
  knobsWithinSteps(plan);
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
    webhook_url: body.webhook_url || null,
    idempotency_key: key,
    priority: body.priority ?? DEFAULT_PRIORITY,
    concurrency_key: body.concurrency_key ?? null,
    scheduled_for: startTime(body, now),
    queue_ttl_s: body.queue_ttl_seconds ?? null,
    request_id: c.get("requestId"),
    input_timeout_s: body.input_timeout_s ?? DEFAULT_INPUT_TIMEOUT_S,
    retry_of: null,
    origin: requestOrigin(c),
  };
}

/** A simulated job's knob that names a step the job does not have would never act: 422, not a job that quietly ignores it. */
function knobsWithinSteps({ knobs, tasks }: { knobs: SimulateKnobs | null; tasks: string[] }): void {
  if (knobs === null) return;
  for (const knob of ["fail_at_step", "input_at_step"] as const) {
    if ((knobs[knob] ?? 0) > tasks.length) {
      throw new ApiError("validation", [
        { loc: ["body", "config", "simulate", knob], msg: `${knob} must be at most the job's steps (${tasks.length})`, type: "value_error" },
      ]);
    }
  }
}

/** A job whose spec its object could not store → 413, before anything is stored or copied. */
function mustFit(spec: RunSpec): RunSpec {
  if (specTooLarge(spec)) {
    throw new ApiError(
      "payload_too_large",
      `Job too large: its prompt, agent and config come to more than the ${MAX_SPEC_BYTES} bytes a job may hold as stored (an agent's role, goal and backstory are stored with each of its tasks)`,
    );
  }
  return spec;
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
    const at = instantOf(body.start_after)!;
    return at > now ? at : null;
  }
  return null;
}

/** Submit: the job's spec, fixed now, then its way in (`enter`). */
submits.post("/api/v1/runs", scope("submit"), jsonBody((env) => limits(env).maxBodyBytes), valid("json", submitBodySchema), async (c) => {
  noWebhookFromToken(c, c.req.valid("json"));
  const body = withRecipeFor(withTokenAgent(c, tokenized(c, c.req.valid("json"))));
  const key = heldAs(c, idempotencyHeader(c) ?? (body.idempotency_key || null));
  const hash = key === null ? null : await bodyHash(body);
  const now = Date.now();
  return spending(c, () => enter(c, mustFit(specFor(c, body, key, now)), hash, now), heldKey(c, key, hash, now));
});

/**
 * A job submitted with a token joins the token's session and carries its tags, so that the token
 * reaches it, and the metadata entries it fixes over the body's (its user's id, which the backend
 * can then trust). Its place in the tenant's line is the token's too, not the browser's to choose:
 * the token's concurrency key and priority (none, and the default, unless the token names them).
 */
function tokenized<
  T extends { session_id?: string | null; tags?: string[] | null; metadata?: Record<string, string> | null; concurrency_key?: string | null; priority?: number | null },
>(c: Ctx, body: T): T {
  const grant = c.get("token");
  if (grant === null) return body;
  const metadata = grant.metadata ? { ...(body.metadata ?? {}), ...grant.metadata } : body.metadata;
  if (metadata && Object.keys(metadata).length > MAX_METADATA_KEYS) {
    throw new ApiError("validation", [
      { loc: ["body", "metadata"], msg: `metadata may hold at most ${MAX_METADATA_KEYS} keys, the token's among them`, type: "value_error" },
    ]);
  }
  return {
    ...body,
    ...(grant.session_id !== null ? { session_id: grant.session_id } : {}),
    ...(grant.tags ? { tags: grant.tags } : {}),
    ...(grant.metadata ? { metadata } : {}),
    concurrency_key: grant.concurrency_key,
    priority: grant.priority ?? DEFAULT_PRIORITY,
  };
}

/**
 * The agent a token fixes runs the jobs it submits, whatever agent the body names (a browser does
 * not choose the instructions the backend's model runs under). The body's `recipe_config` stays
 * for the token's recipe, and is set aside for an agent file, which takes none.
 */
function withTokenAgent(c: Ctx, body: SubmitBody): SubmitBody {
  const agent = c.get("token")?.agent;
  if (!agent) return body;
  const choice = agentChoice(agent);
  return { ...body, ...choice, recipe_config: choice.recipe_name === null ? null : body.recipe_config };
}

/**
 * A `recipe_config` with settings needs a recipe: the body's, or the token's (so checked once the
 * token's agent is in). An empty one is PraisonAI's own default: a client sending its model whole sends it.
 */
function withRecipeFor(body: SubmitBody): SubmitBody {
  if (hasEntries(body.recipe_config) && !body.recipe_name) {
    throw new ApiError("validation", [{ loc: ["body", "recipe_config"], msg: "recipe_config needs recipe_name", type: "value_error" }]);
  }
  return body;
}

/** The model settings a token fixes for the jobs it submits (its model, its budget): none for a key. */
const tokenConfig = (c: Ctx) => c.get("token")?.config ?? {};

/** A browser holding a token does not choose where the service sends its webhooks (its backend does, submitting with its key). */
function noWebhookFromToken(c: Ctx, body: { webhook_url?: string | null }): void {
  if (c.get("token") !== null && body.webhook_url) throw new ApiError("forbidden", "Token does not allow webhook_url");
}

/**
 * A token's submit, counted against its `max_submits` before the job is made, and given back
 * when no new job came of it (a failure, or an idempotent replay of an earlier one). Past the
 * limit, a submit whose idempotency key names an earlier job (`held`) is still answered with it.
 * Submits a token spent in the shard that counted them before PROJECTION_SHARDS was last raised
 * count too.
 */
async function spending(c: Ctx, submit: () => Promise<Response>, held?: () => Promise<Response | null>): Promise<Response> {
  const grant = c.get("token");
  if (grant === null) return submit();
  const spentBefore = await spentEarlier(c, grant);
  if (!(await projectionOf(c, grant.id).spendSubmit(grant.id, (grant.max_submits ?? 0) - spentBefore, grant.expires * 1000))) {
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
    // A refund that fails leaves the submit spent; the submit's own answer stands.
    if (!made) await undo(c, { tenant: c.get("tenant") }, () => projectionOf(c, grant.id).refundSubmit(grant.id));
  }
}

/** What a token spent in the shard that counted its submits before PROJECTION_SHARDS was last raised. */
async function spentEarlier(c: Ctx, grant: Grant): Promise<number> {
  return (await earlierProjectionOf(c, grant.id)?.submitsSpent(grant.id)) ?? 0;
}

/** How many more jobs a token may submit: null for one without the submit scope. */
export async function submitsLeft(c: Ctx, grant: Grant): Promise<number | null> {
  if (grant.max_submits === null) return null;
  const [before, now] = await Promise.all([spentEarlier(c, grant), projectionOf(c, grant.id).submitsSpent(grant.id)]);
  return Math.max(0, grant.max_submits - before - now);
}

/**
 * A new job's way in: a place in the tenant's line (refused past its queued limit, storing
 * nothing), then the job's object (running at once when the line granted a slot, with the steps
 * a retry copied already done), then its registration with the projection, which may find the
 * idempotency key taken: then the new job is discarded and the one holding the key answers.
 */
async function enter(c: Ctx, spec: RunSpec, hash: string | null, now: number, copied: CopiedStep[] = [], revision: string | null = null) {
  const key = spec.idempotency_key;
  // A key held where it was before the last raise is answered there; its own shard decides the rest.
  const earlier = key === null ? null : await earlierProjectionOf(c, key)?.keyHolder(key, hash);
  if (earlier) return replay(c, earlier, now);
  const place = await lineFor(c, spec).join(placeRequest(spec));
  if (!place.ok) {
    const holder = key === null ? null : await projectionOf(c, key).keyHolder(key, hash);
    if (holder) return replay(c, holder, now);
    throw new ApiError("queue_full", `Too many queued jobs for this tenant (limit ${place.limit})`, {}, { "Retry-After": String(QUEUE_FULL_RETRY_S) });
  }

  const run = runStub(c, spec.job_id);
  const made = await run.create(spec, place.granted, copied, revision).catch(async (error: unknown) => {
    // The call may have failed after the job was made (its answer lost on the way back): the job
    // is discarded, so that a submit answered with a failure leaves none to run, and then its
    // place is given up. A place this cannot give up is the line's to clear, as a submit's cut
    // short. On a new stub: a stub that has thrown fails every later call.
    await undo(c, spec, () => runStub(c, spec.job_id).discard().then(() => lineFor(c, spec).leave(spec.job_id)));
    throw error;
  });
  // Refused, the object holds a job already (never this submit's, whose id is new): it keeps its place.
  const created = unwrap(made);
  const entry = { job: created.job, version: created.version, idempotency_key: key, body_hash: hash };
  const admission = await projectionFor(c, spec).admit(entry).catch(async (error: unknown) => {
    // The entry may have been made (its answer lost): the job's discard removes it too.
    await undo(c, spec, () => run.discard());
    throw error;
  });
  if (!admission.admitted) {
    await undo(c, spec, () => run.discard());
    return replay(c, admission, now);
  }
  return accepted(c, spec.job_id, created.job.status, created.job.created_at);
}

/**
 * Undoes what a submit that failed, or made no job, did (of `job`): a failure here is logged, and
 * the submit's own answer stands.
 */
async function undo(c: Ctx, job: { job_id?: string; tenant: string }, steps: () => Promise<unknown>): Promise<void> {
  try {
    await steps();
  } catch (error) {
    logFailure("undoing a failed submit", error, { job_id: job.job_id, tenant: job.tenant, request_id: c.get("requestId") });
  }
}

/** The answer to a submit whose idempotency key names an earlier job. */
async function replay(c: Ctx, held: HeldKey, now: number) {
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

// ---- retry --------------------------------------------------------------------------------

submitOperations.push({
  method: "post",
  path: "/api/v1/runs/{id}/retry",
  summary: "Retry a failed or cancelled run from its first unfinished step (or from_step), as a new run",
  params: jobIdParamSchema,
  headers: () => z.object({ "idempotency-key": z.optional(z.string()) }),
  body: retryBodySchema,
  responses: {
    202: { json: submitResponseSchema, description: "The new run, with retry_of naming this one" },
    400: errors[400],
    403: { json: errorSchema, description: "A scoped token without `submit`, or past its `max_submits`" },
    404: errors[404],
    409: { json: errorSchema, description: "The idempotency key names a job made by another request" },
    413: { json: errorSchema, description: "Body over the size limit, or a job too large to store" },
    422: errors[422],
    429: { json: errorSchema, description: "The tenant holds as many queued jobs as it may; retry after Retry-After" },
  },
});

/**
 * Retry: a new job with the old one's spec (prompt and config keys replaced where the body
 * says), whose steps before `from_step` are the old job's outputs, copied under its own prefix
 * before it exists, so that deleting either job later never touches the other; a revision a
 * person asked for at the step it starts at goes with it. With an `Idempotency-Key`, a repeat
 * answers with the job the first made, before anything is copied.
 */
submits.post(
  "/api/v1/runs/:id/retry",
  scope("submit"),
  valid("param", jobIdParamSchema),
  jsonBody((env) => limits(env).maxBodyBytes, { optional: true }),
  valid("json", retryBodySchema),
  async (c) => {
    const { id } = c.req.valid("param");
    const body = c.req.valid("json");
    const key = heldAs(c, idempotencyHeader(c));
    const hash = key === null ? null : await bodyHash({ ...body, retry_of: id });
    const now = Date.now();
    const held = heldKey(c, key, hash, now);
    const stub = await reachable(c, id);
    // A repeat is answered before the old job is read: its job stands, whatever became of the old one.
    const repeated = held && (await held());
    if (repeated) return repeated;
    // The spec's config holds `unknown` values, which RPC's return typing cannot express.
    const source = unwrap(await stub.retrySource()) as unknown as { spec: RunSpec; parts: FinishedPart[]; revision: string | null };
    // The deployment may have lost its signing secret since the old job was made.
    if (source.spec.webhook_url) mustSignWebhooks(c);
    const firstUnfinished = source.parts.length + 1;
    const from = body.from_step ?? firstUnfinished;
    if (from > firstUnfinished) throw new ApiError("bad_request", `from_step must be at most ${firstUnfinished}, the first unfinished step`);
    const own = tokenized(c, source.spec);
    const spec: RunSpec = mustFit({
      ...own,
      ...placeJob(c.env, c.get("tenant"), { idempotency_key: key, concurrency_key: own.concurrency_key }),
      created_at: now,
      prompt: body.prompt ?? source.spec.prompt,
      config: { ...source.spec.config, ...(body.config ?? {}), ...tokenConfig(c) },
      idempotency_key: key,
      scheduled_for: null,
      request_id: c.get("requestId"),
      retry_of: id,
      origin: requestOrigin(c),
    });
    const prefix = outputPrefix(spec.tenant, spec.job_id);
    const copied: CopiedStep[] = [];
    try {
      for (const part of source.parts.filter((p) => p.idx < from)) {
        copied.push({ ...(await copyPart(c.env.OUTPUTS, part, partKey(prefix, part.idx))), idx: part.idx, note: part.note });
      }
      // A revision a person asked for at the step it starts at goes with it, unless the prompt changed.
      const revision = from === firstUnfinished && body.prompt == null ? source.revision : null;
      return await spending(c, () => enter(c, spec, hash, now, copied, revision), held);
    } catch (error) {
      // Nothing of a retry that did not happen is kept; an old job deleted meanwhile is gone.
      if (copied.length > 0) await undo(c, spec, () => purgePrefix(c.env.OUTPUTS, prefix));
      if (!(await runStub(c, id).get()).ok) throw raise(jobNotFound(id));
      throw error;
    }
  },
);
