/**
 * A new job's way in, shared by submit and retry: its place in the tenant's line, its object, and
 * its registration with the tenant's projection, where an idempotency key is held (`enter`); a
 * scoped token's share in it (its count of submits, what it fixes of the job); and the answer.
 */
import { ApiError, misconfigured, unwrap } from "../errors";
import { logFailure } from "../log";
import { placeRequest, POLL_INTERVAL_S, tenantObjects, type CopiedStep, type RunSpec } from "../run/job";
import { MAX_SPEC_BYTES, specTooLarge } from "../run/store";
import type { Status } from "../run/transitions";
import type { SimulateKnobs } from "../runners/simulated";
import { DEFAULT_PRIORITY, MAX_METADATA_KEYS } from "../schemas";
import { webhookSigningProblem } from "../settings";
import type { HeldKey } from "../tenant/TenantProjection";
import { earlierProjectionOfKey, projectionOfKey } from "../tenant/shards";
import type { SpentOn } from "../tenant/tokenSubmits";
import type { Grant } from "../tokens";
import { pollUrl, runStub, type Ctx } from "./reach";

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

/**
 * A request with an idempotency key: the name the key is held under, and `held`, the answer to the
 * request when an earlier job holds the key: that job (or 409 for another body), looked for in the
 * key's shard and where it was before the last raise; null when none holds it.
 */
export interface Keyed {
  key: string;
  held: () => Promise<Response | null>;
}

export function keyed(c: Ctx, key: string | null, hash: string | null, now: number): Keyed | undefined {
  if (key === null) return undefined;
  return {
    key,
    held: async () => {
      const holder = (await projectionOf(c, key).keyHolder(key, hash)) ?? (await earlierProjectionOf(c, key)?.keyHolder(key, hash));
      return holder ? replay(c, holder, now) : null;
    },
  };
}

/** Seconds a client refused for a full line is asked to wait. */
const QUEUE_FULL_RETRY_S = 30;

/** A job whose spec its object could not store → 413, before anything is stored or copied. */
export function mustFit(spec: RunSpec): RunSpec {
  if (specTooLarge(spec)) {
    throw new ApiError(
      "payload_too_large",
      `Job too large: its prompt, agent and config come to more than the ${MAX_SPEC_BYTES} bytes a job may hold as stored (an agent's role, goal and backstory are stored with each of its tasks)`,
    );
  }
  return spec;
}

/** A simulated job's knob that names a step the job does not have would never act: 422, not a job that quietly ignores it. */
export function knobsWithinSteps({ knobs, tasks }: { knobs: SimulateKnobs | null; tasks: string[] }): void {
  if (knobs === null) return;
  for (const knob of ["fail_at_step", "input_at_step"] as const) {
    if ((knobs[knob] ?? 0) > tasks.length) {
      throw new ApiError("validation", [
        { loc: ["body", "config", "simulate", knob], msg: `${knob} must be at most the job's steps (${tasks.length})`, type: "value_error" },
      ]);
    }
  }
}

/** A job with a webhook_url is made only where webhooks are signed: 503 naming the missing secret otherwise. */
export function mustSignWebhooks(c: Ctx): void {
  const unsigned = webhookSigningProblem(c.env);
  if (unsigned) throw misconfigured(unsigned);
}

/**
 * A job submitted with a token joins the token's session and carries its tags, so that the token
 * reaches it, and the metadata entries it fixes over the body's (its user's id, which the backend
 * can then trust). Its place in the tenant's line is the token's too, not the browser's to choose:
 * the token's concurrency key and priority (none, and the default, unless the token names them).
 */
export function tokenized<
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

/** The model settings a token fixes for the jobs it submits (its model, its budget): none for a key. */
export const tokenConfig = (c: Ctx) => c.get("token")?.config ?? {};

/**
 * A token's submit of `job`, counted against its `max_submits` before the job is made, and given
 * back when no new job came of it (a failure, or an idempotent replay of an earlier one), or, when
 * the submit was cut short before it could say (its Worker stopped), by the counter a minute on if
 * the job was never made. Past the limit, a submit under an idempotency key is answered as
 * `sameKey` says. Submits a token spent in the shard that counted them before PROJECTION_SHARDS
 * was last raised count too.
 */
export async function spending(c: Ctx, job: Pick<RunSpec, "job_id" | "tenant" | "projection" | "line">, submit: () => Promise<Response>, keyed?: Keyed): Promise<Response> {
  const grant = c.get("token");
  if (grant === null) return submit();
  const counter = projectionOf(c, grant.id);
  const max = (grant.max_submits ?? 0) - (await spentEarlier(c, grant));
  const key = keyed?.key ?? null;
  const spentOn: SpentOn = { job_id: job.job_id, projection: tenantObjects(job).projection };
  if (!(await counter.spendSubmit(grant.id, max, grant.expires * 1000, key, spentOn))) {
    const answer = keyed ? await sameKey(counter, grant, max, keyed, spentOn) : null;
    if (answer === null) throw new ApiError("forbidden", "Token submit limit reached");
    if (answer !== "spent") return answer;
  }
  let made = false;
  try {
    const response = await submit();
    made = response.headers.get("Idempotent-Replayed") === null;
    return response;
  } finally {
    // A refund that fails leaves the submit spent; the submit's own answer stands.
    if (!made) await undo(c, { tenant: c.get("tenant") }, () => counter.refundSubmit(grant.id, key, job.job_id));
    // The job holds the key now. Should the counter not hear so, it keeps the key a minute (a
    // submit sent again past the limit once the job is deleted waits that long), then asks
    // whether the job was made; the answer stands.
    else {
      await counter
        .submitMade(grant.id, key, job.job_id)
        .catch((error: unknown) => logFailure("telling a token's counter its submit made its job", error, { tenant: c.get("tenant"), request_id: c.get("requestId") }));
    }
  }
}

/** What a submit past its token's limit waits between looks for another under the same key: about 10 s in all. */
const SAME_KEY_WAITS_MS = [25, 50, 100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000];

/**
 * A submit past its token's limit, under an idempotency key: answered with the job an earlier
 * submit under the key made. While one under the key is still under way (this one was sent again
 * before its answer came), it waits for that one: for its job, or for its count given back, when
 * this one is counted instead ("spent"). Null: refused, as the limit says.
 */
async function sameKey(counter: ReturnType<typeof projectionOf>, grant: Grant, max: number, keyed: Keyed, spentOn: SpentOn): Promise<Response | "spent" | null> {
  for (const wait of SAME_KEY_WAITS_MS) {
    const replayed = await keyed.held();
    if (replayed) return replayed;
    const now = await counter.spendSubmitUnderKey(grant.id, max, grant.expires * 1000, keyed.key, spentOn);
    if (now !== "under_way") return now === "spent" ? "spent" : null;
    await scheduler.wait(wait);
  }
  return keyed.held();
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
export async function enter(c: Ctx, spec: RunSpec, hash: string | null, now: number, copied: CopiedStep[] = [], revision: string | null = null) {
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
  // The job keeps what its key is held with, to claim the key itself should this submit stop
  // before the projection's entry (a retry's spec, made from the old job's, must not keep the old hash).
  const stored: RunSpec = { ...spec, body_hash: key === null ? null : hash };
  const made = await run.create(stored, place.granted, copied, revision).catch(async (error: unknown) => {
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
export async function undo(c: Ctx, job: { job_id?: string; tenant: string }, steps: () => Promise<unknown>): Promise<void> {
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
