const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ID_CHARS = 24; // 24 base62 characters: ~143 bits from the CSPRNG

/** A new unguessable id: `<prefix>_` + 24 characters of [A-Za-z0-9]. */
export function newId(prefix: "run" | "bulk" | "msg"): string {
  const out: string[] = [];
  // Rejection sampling keeps every character uniform (256 is not a multiple of 62).
  while (out.length < ID_CHARS) {
    for (const byte of crypto.getRandomValues(new Uint8Array(32))) {
      if (byte < 248 && out.length < ID_CHARS) out.push(ALPHABET[byte % 62]);
    }
  }
  return `${prefix}_${out.join("")}`;
}

/** A new job id: `run_` + 24 characters of [A-Za-z0-9]. */
export const newJobId = () => newId("run");

const JOB_ID = /^run_[A-Za-z0-9_-]{1,128}$/;

/** Ids not of the contract's form can never name a job: they are answered like unknown ids. */
export function isJobId(id: string): boolean {
  return JOB_ID.test(id);
}

/** A job's address on an origin (`scheme://host:port`): its `poll_url`. */
export const jobUrl = (origin: string, jobId: string) => `${origin}/api/v1/runs/${jobId}`;

/** Where a job's output is read on an origin: the `result_url` of /result, the named stream and webhooks. */
export const jobOutputUrl = (origin: string, jobId: string) => `${jobUrl(origin, jobId)}/output`;

/** The Durable Object name of a job: tenant and id, so another tenant's id reaches an empty object. */
export function runObjectName(tenant: string, jobId: string): string {
  return `${tenant}/${jobId}`;
}

const TENANT_KEY = "tenant";

/**
 * A tenant's object (its line, its projection) keeps the name it is called by: the platform
 * gives an instance its name only when a call by name started it, and an alarm that starts it
 * (after an eviction, a restart, a deploy) runs without one.
 */
export function rememberTenant(ctx: DurableObjectState): void {
  const name = ctx.id.name;
  if (name && ctx.storage.kv.get<string>(TENANT_KEY) !== name) ctx.storage.kv.put(TENANT_KEY, name);
}

/** The tenant a tenant's object belongs to: its name, or the one it kept; null while it knows neither. */
export function tenantOf(ctx: DurableObjectState): string | null {
  return ctx.id.name ?? ctx.storage.kv.get<string>(TENANT_KEY) ?? null;
}

/**
 * For an alarm that started an instance of an object that never kept its name (one from before
 * it did): the alarm is put off and the instance given up, so that the next call by name starts
 * one that learns it.
 */
export async function giveUpNameless(ctx: DurableObjectState, retryAtMs: number): Promise<void> {
  await ctx.storage.setAlarm(retryAtMs);
  ctx.abort("started by an alarm without its tenant's name; the next call by name starts it again");
}
