import type { ContentfulStatusCode } from "hono/utils/http-status";

/**
 * Error codes are what crosses RPC: a Durable Object returns `{ ok: false, code, detail }`
 * (error classes do not survive RPC) and the Worker maps the code to HTTP here, once.
 */
export const ERROR_STATUS = {
  bad_request: 400,
  invalid_state: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  idempotency_conflict: 409,
  conflict: 409,
  precondition_failed: 412,
  range_not_satisfiable: 416,
  payload_too_large: 413,
  validation: 422,
  rate_limited: 429,
  queue_full: 429,
  purge_failed: 500,
  internal: 500,
  not_implemented: 501,
  overloaded: 503,
  misconfigured: 503,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** The failure half of every RPC result. `extra` fields are merged into the response body. */
export interface Failure {
  ok: false;
  code: ErrorCode;
  detail: string;
  extra?: Record<string, unknown>;
}

export type Result<T> = ({ ok: true } & T) | Failure;

export function fail(code: ErrorCode, detail: string, extra?: Record<string, unknown>): Failure {
  return extra ? { ok: false, code, detail, extra } : { ok: false, code, detail };
}

/** Thrown inside the Worker; `app.onError` turns it into `{"detail": ...}` with the code's status. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly detail: unknown,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(typeof detail === "string" ? detail : code);
  }

  get status(): ContentfulStatusCode {
    return ERROR_STATUS[this.code];
  }
}

/** Unwraps an RPC result in the Worker, throwing its failure as an ApiError. */
export function unwrap<T>(result: Result<T>): T {
  if (!result.ok) throw raise(result);
  return result;
}

export const raise = (failure: Failure) => new ApiError(failure.code, failure.detail, failure.extra);

/** The one answer for a request this deployment's settings do not let it serve soundly (503). */
export const misconfigured = (problem: string) => new ApiError("misconfigured", `Service misconfigured: ${problem}`);

/** What an error says, for a message of our own: its message, or the thrown value as text. */
export const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** The one answer for a job that does not exist, is deleted, or is another tenant's. */
export const jobNotFound = (id: string) => fail("not_found", `Job not found: ${id}`);

/**
 * An object that does not have a method this Worker calls: during a deploy, an object may still
 * run the version before (or the Worker may be the older one). The client is asked to come back.
 */
export function isVersionSkew(error: unknown): boolean {
  return error instanceof Error && /does not implement the method/.test(error.message);
}

/**
 * The platform's "overloaded" error of a Durable Object (its `overloaded` property): the object
 * has more requests queued than it can take. The client is asked to come back, never given a 500.
 */
export function isOverloaded(error: unknown): boolean {
  return flagged(error, "overloaded");
}

/**
 * A failure the platform reports as passing on a call into a Durable Object: one it marks
 * `retryable` (a connection lost, an internal error), or one that reset the object
 * (`durableObjectReset`: its storage failed, or it was moved or updated); the next call reaches
 * a fresh instance. The client is asked to come back, never given a 500.
 */
export function isTransient(error: unknown): boolean {
  return flagged(error, "retryable") || flagged(error, "durableObjectReset");
}

const flagged = (error: unknown, property: string) =>
  typeof error === "object" && error !== null && (error as Record<string, unknown>)[property] === true;
