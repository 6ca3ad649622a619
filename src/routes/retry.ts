/**
 * Retry: a new job from a failed or cancelled one's spec, whose finished steps are the old job's
 * outputs, copied under the new job's prefix; it comes in as a submit does (`enter`).
 */
import { Hono } from "hono";
import * as z from "zod/mini";
import { scope, type AppEnv } from "../auth";
import { limits } from "../config";
import { ApiError, jobNotFound, raise, unwrap } from "../errors";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import type { CopiedStep, RunSpec } from "../run/job";
import type { FinishedPart } from "../run/store";
import { simulateKnobs } from "../runners/simulated";
import { errorSchema, jobIdParamSchema, keyConflictSchema, retryBodySchema, submitResponseSchema } from "../schemas";
import { copyPart, outputPrefix, partKey, purgePrefix } from "../storage/blobs";
import { placeJob } from "../tenant/shards";
import { enter, keyed, knobsWithinSteps, mustFit, mustSignWebhooks, spending, tokenConfig, tokenized, undo } from "./entry";
import { bodyHash, heldAs, idempotencyHeader } from "./idempotency";
import { errors, reachable, requestOrigin, runStub, type Ctx } from "./reach";

export const retries = new Hono<AppEnv>();
/** What the OpenAPI document says of this route. */
export const retryOperations: Operation[] = [];

retryOperations.push({
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
    409: { json: keyConflictSchema, description: "The idempotency key names a job made by another request" },
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
retries.post(
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
    const repeat = keyed(c, key, hash, now);
    const stub = await reachable(c, id);
    // A repeat is answered before the old job is read: its job stands, whatever became of the old one.
    const repeated = repeat && (await repeat.held());
    if (repeated) return repeated;
    // The spec's config holds `unknown` values, which RPC's return typing cannot express.
    const source = unwrap(await stub.retrySource()) as unknown as { spec: RunSpec; parts: FinishedPart[]; revision: string | null };
    // The deployment may have lost its signing secret since the old job was made.
    if (source.spec.webhook_url) mustSignWebhooks(c);
    const firstUnfinished = source.parts.length + 1;
    const from = body.from_step ?? firstUnfinished;
    if (from > firstUnfinished) throw new ApiError("bad_request", `from_step must be at most ${firstUnfinished}, the first unfinished step`);
    const spec = retrySpec(c, id, source.spec, body, key, now);
    const prefix = outputPrefix(spec.tenant, spec.job_id);
    const copied: CopiedStep[] = [];
    // The new job's object holds its prefix before each copy: copies of a retry that stops before making its job are purged.
    const holder = runStub(c, spec.job_id);
    try {
      for (const part of source.parts.filter((p) => p.idx < from)) {
        unwrap(await holder.holdPrefix(spec.tenant, spec.job_id));
        copied.push({ ...(await copyPart(c.env.OUTPUTS, part, partKey(prefix, part.idx))), idx: part.idx, note: part.note });
      }
      // A revision a person asked for at the step it starts at goes with it, unless the prompt changed.
      const revision = from === firstUnfinished && body.prompt == null ? source.revision : null;
      const answer = await spending(c, spec, () => enter(c, spec, hash, now, copied, revision), repeat);
      // A repeat answered with the job an earlier retry made: what this one copied is no job's.
      if (answer.headers.get("Idempotent-Replayed") !== null && copied.length > 0) await undo(c, spec, () => purgePrefix(c.env.OUTPUTS, prefix));
      return answer;
    } catch (error) {
      // Nothing of a retry that did not happen is kept; an old job deleted meanwhile is gone.
      if (copied.length > 0) await undo(c, spec, () => purgePrefix(c.env.OUTPUTS, prefix));
      if (!(await runStub(c, id).get()).ok) throw raise(jobNotFound(id));
      throw error;
    }
  },
);

/**
 * The new job's spec: the old one's as the caller's token allows it, with the prompt and config
 * keys the body replaces, placed as a new job of this request.
 */
function retrySpec(c: Ctx, id: string, old: RunSpec, body: z.infer<ReturnType<typeof retryBodySchema>>, key: string | null, now: number): RunSpec {
  const own = tokenized(c, old);
  const spec: RunSpec = mustFit({
    ...own,
    ...placeJob(c.env, c.get("tenant"), { idempotency_key: key, concurrency_key: own.concurrency_key }),
    created_at: now,
    prompt: body.prompt ?? old.prompt,
    config: { ...old.config, ...(body.config ?? {}), ...tokenConfig(c) },
    idempotency_key: key,
    scheduled_for: null,
    request_id: c.get("requestId"),
    retry_of: id,
    origin: requestOrigin(c),
  });
  simulatedStepsKept(spec, body.config);
  return spec;
}

/**
 * A retry runs the old job's steps. For a simulated job, the knobs the retry's config gives are
 * held to those steps as a submit's are, and a `simulate.steps` other than their count → 422, not
 * a count quietly kept.
 */
function simulatedStepsKept(spec: RunSpec, given: Record<string, unknown> | null | undefined): void {
  if (spec.runner !== "simulated" || given?.simulate === undefined) return;
  const knobs = simulateKnobs(given);
  if ((given.simulate as { steps?: number }).steps !== undefined && knobs.steps !== spec.tasks.length) {
    throw new ApiError("validation", [
      { loc: ["body", "config", "simulate", "steps"], msg: `a retry runs the old job's ${spec.tasks.length} steps`, type: "value_error" },
    ]);
  }
  knobsWithinSteps({ knobs, tasks: spec.tasks });
}
