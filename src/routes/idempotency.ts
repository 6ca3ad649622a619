/**
 * Idempotency keys: the `Idempotency-Key` header checked, the name a key is held under (a scoped
 * token's apart from everyone else's), and the hash of the body it is held with. A submit, a retry
 * and an answer to a request for input each take one.
 */
import { hex, sha256 } from "../digest";
import { ApiError } from "../errors";
import type { Ctx } from "./reach";

/** What an idempotency key is held with: the request's body (for a retry, with the job it retries), keys sorted. */
export async function bodyHash(body: Record<string, unknown>): Promise<string> {
  const { idempotency_key: _, ...rest } = body;
  const canonical = JSON.stringify(rest, (_key, value) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : 1)))
      : value,
  );
  return hex(await sha256(canonical));
}

/** The `Idempotency-Key` header, checked, or null when none was sent. */
export function idempotencyHeader(c: Ctx): string | null {
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
export function heldAs(c: Ctx, key: string | null): string | null {
  const grant = c.get("token");
  return key === null || grant === null ? key : `token ${grant.id} ${key}`;
}
