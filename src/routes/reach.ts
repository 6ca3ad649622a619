/**
 * How a request reaches one job: the job's object, within a scoped token's reach (a job outside
 * it is answered as an unknown one), and what the routes' answers and documents say of a job.
 */
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { jobNotFound, raise } from "../errors";
import { isJobId, jobOutputUrl, jobUrl, runObjectName } from "../ids";
import { errorSchema, type Scope } from "../schemas";
import { reaches, reachNeedsJob } from "../tokens";

export type Ctx = Context<AppEnv>;

/** The OpenAPI responses the run routes share. */
export const errors = {
  400: { json: errorSchema, description: "Not possible in the job's current state, or a malformed request" },
  404: { json: errorSchema, description: "Unknown job" },
  422: { json: errorSchema, description: "The request breaks the schema" },
};

/** 403 for a scoped token without the scope an operation needs (`scope` in src/auth.ts). */
export const withoutScope = (needed: Scope, besides = "") => ({
  json: errorSchema,
  description: `A scoped token without \`${needed}\` (\`Token does not allow ${needed}\`)${besides}`,
});

/** 403 for any scoped token, on what only a key may do (`keyOnly` in src/auth.ts). */
export const keyOnlyForbidden = (what: string) => ({ json: errorSchema, description: `Only a key may; a scoped token gets \`Token does not allow ${what}\`` });

/** The job's object; an id that can name no job is answered as an unknown one. */
export function runStub(c: Ctx, id: string) {
  c.set("jobId", id);
  if (!isJobId(id)) throw raise(jobNotFound(id));
  return c.env.RUNS.getByName(runObjectName(c.get("tenant"), id));
}

/**
 * The job's object, for a request that acts on it: a job outside the token's reach is answered
 * as an unknown one, before anything is done. Reach is decided by the job's session and tags,
 * which never change once it is submitted.
 */
export async function reachable(c: Ctx, id: string) {
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
export function shown<T extends { job_id: string; session_id: string | null; tags?: string[] }>(c: Ctx, job: T): T {
  const grant = c.get("token");
  if (grant !== null && !reaches(grant, job)) throw raise(jobNotFound(job.job_id));
  return job;
}

/** The origin the request came to, as its answers' links name it. */
export const requestOrigin = (c: Ctx) => new URL(c.req.url).origin;
export const pollUrl = (c: Ctx, id: string) => jobUrl(requestOrigin(c), id);
export const resultUrl = (c: Ctx, id: string) => jobOutputUrl(requestOrigin(c), id);

/** When the request's scoped token expires (ms since the epoch): what it opens ends then. Undefined for a key. */
export function tokenExpiry(c: Ctx): number | undefined {
  const grant = c.get("token");
  return grant === null ? undefined : grant.expires * 1000;
}
