/**
 * A tenant's objects, when one of each is not enough (docs/SCALE.md): its projection in
 * PROJECTION_SHARDS shards and its line in LINE_SHARDS lines. Shard 0 of each is the tenant's one
 * object of a deployment without shards (named by the tenant alone), so that 1 is exactly the
 * unsharded service and raising a count keeps every object there was.
 *
 * - A job's projection shard is chosen by its id, or, when it has an idempotency key, by the key:
 *   the key and its job live in one shard, so that a submit's admission stays one call.
 * - A job's line is chosen by its concurrency key (a key's limit is kept by one line), else by
 *   its id. Each line has its share of the tenant's running and queued limits.
 * - A scoped token's submit counter lives in the shard of the token's id.
 * - A raise of PROJECTION_SHARDS moves most keys and token counters to another shard; with
 *   PROJECTION_SHARDS_BEFORE set to the count before it, each is looked for where it was then, too.
 * A job stores the names of its shard and its line when it is created and sends there for its
 * whole life, whatever the counts become.
 */
import { newJobId } from "../ids";
import { numberSetting } from "../settings";

/** FNV-1a of the text's UTF-16 code units: stable, fast, and spread well enough for a modulus. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export const shardOf = (text: string, count: number) => (count <= 1 ? 0 : hash(text) % count);

export const projectionShards = (env: Env) => numberSetting(env, "PROJECTION_SHARDS");
export const lineShards = (env: Env) => numberSetting(env, "LINE_SHARDS");

/** The name of a tenant's projection shard; shard 0 is the tenant's own name. */
export const projectionName = (tenant: string, shard: number) => (shard === 0 ? tenant : `${tenant}#p${shard}`);
/** The name of one of a tenant's lines; line 0 is the tenant's own name. */
export const lineName = (tenant: string, shard: number) => (shard === 0 ? tenant : `${tenant}#l${shard}`);

/** The most shards or lines a tenant may have: sequence numbers keep the shard in 4 bits. */
export const MAX_SHARDS = 16;

/** A tenant object's index among its shards (or lines), from its name. */
export function shardIndex(name: string): number {
  const match = /#[pl](\d+)$/.exec(name);
  return match ? Number(match[1]) : 0;
}

/** The tenant a tenant's object (any shard) belongs to: tenant names never hold `#`. */
export const tenantOfObject = (name: string) => name.split("#")[0];

/** Every projection shard of a tenant, shard 0 first. */
export function projectionNames(env: Env, tenant: string): string[] {
  return Array.from({ length: projectionShards(env) }, (_, shard) => projectionName(tenant, shard));
}

/** The projection shard of a key: an idempotency key and its job, a job without one by its id, a token's submit counter. */
export const projectionOfKey = (env: Env, tenant: string, key: string) => projectionName(tenant, shardOf(key, projectionShards(env)));

/**
 * The shard that held an idempotency key or a token's submit counter before PROJECTION_SHARDS was
 * last raised (PROJECTION_SHARDS_BEFORE), when that is another than its shard now; else null.
 */
export function earlierProjectionOfKey(env: Env, tenant: string, key: string): string | null {
  const before = numberSetting(env, "PROJECTION_SHARDS_BEFORE");
  if (before === 0) return null;
  const earlier = projectionName(tenant, shardOf(key, before));
  return earlier === projectionOfKey(env, tenant, key) ? null : earlier;
}

/** The line of a job, from what the job object shows: its concurrency key, else its id. */
export function lineOfJob(env: Env, tenant: string, job: { job_id: string; concurrency_key?: string | null }): string {
  return lineName(tenant, shardOf(job.concurrency_key ?? job.job_id, lineShards(env)));
}

/** A new job's id and the names of its projection shard (its key's, when it has one) and its line. */
export function placeJob(env: Env, tenant: string, keys: { idempotency_key: string | null; concurrency_key: string | null }) {
  const jobId = newJobId();
  return {
    job_id: jobId,
    projection: projectionOfKey(env, tenant, keys.idempotency_key ?? jobId),
    line: lineOfJob(env, tenant, { job_id: jobId, concurrency_key: keys.concurrency_key }),
  };
}
