/**
 * Submit: a job's spec, fixed from the request's body (and the scoped token's terms, where one is
 * used), then its way in (`enter`, in ./entry).
 */
import { Hono } from "hono";
import * as z from "zod/mini";
import { scope, type AppEnv } from "../auth";
import { allowPrivateWebhooks, limits } from "../config";
import { ApiError } from "../errors";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import type { RunSpec } from "../run/job";
import { planRun } from "../runners/choice";
import { agentChoice, resolveAgent } from "../runners/agents";
import {
  DEFAULT_INPUT_TIMEOUT_S,
  DEFAULT_PRIORITY,
  DEFAULT_TIMEOUT_S,
  errorSchema,
  hasEntries,
  instantOf,
  keyConflictSchema,
  submitBodySchema,
  submitResponseSchema,
  type SubmitBody,
} from "../schemas";
import { placeJob } from "../tenant/shards";
import { webhookUrlProblem } from "../webhooks/targets";
import { enter, keyed, knobsWithinSteps, mustFit, mustSignWebhooks, spending, tokenConfig, tokenized } from "./entry";
import { bodyHash, heldAs, idempotencyHeader } from "./idempotency";
import { errors, requestOrigin, type Ctx } from "./reach";

export const submits = new Hono<AppEnv>();
/** What the OpenAPI document says of this route. */
export const submitOperations: Operation[] = [];

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
    409: { json: keyConflictSchema, description: "The idempotency key names a job submitted with another body" },
    413: { json: errorSchema, description: "Body over the size limit, or a job too large to store" },
    422: errors[422],
    429: { json: errorSchema, description: "The tenant holds as many queued jobs as it may; retry after Retry-After" },
  },
});

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
  const spec = mustFit(specFor(c, body, key, now));
  return spending(c, spec, () => enter(c, spec, hash, now), keyed(c, key, hash, now));
});

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

/** A browser holding a token does not choose where the service sends its webhooks (its backend does, submitting with its key). */
function noWebhookFromToken(c: Ctx, body: { webhook_url?: string | null }): void {
  if (c.get("token") !== null && body.webhook_url) throw new ApiError("forbidden", "Token does not allow webhook_url");
}
