/**
 * What the chaos run's clients share: its settings, its seeded choices, the tenants and their API
 * keys, every job an answer named with what is known of it, and the problems found.
 */
import { createHash } from "node:crypto";

export const SECONDS = Number(process.env.CHAOS_SECONDS ?? 60);
export const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 1e6));
export const [KILL_MIN_MS, KILL_MAX_MS] = (process.env.CHAOS_KILL_MS ?? "3000-9000").split("-").map(Number);
export const SETTLE_MS = 600_000;
/** How long after granting a slot as a job joins the line asks the job whether it was made (src/tenant/TenantLine.ts). */
export const SLOT_ASKED_AFTER_MS = 60_000;
export const PORT = Number(process.env.CHAOS_PORT ?? 8005);
/** `CHAOS_SHARDS=P,L`: each tenant's projection in P shards and its line in L lines (P alone: as many of each). */
export const [PROJECTION_SHARDS, LINE_SHARDS] = ((given) => [given[0], given[1] ?? given[0]])((process.env.CHAOS_SHARDS ?? "1").split(",").map(Number));
export const TENANTS = ["alpha", "beta"] as const;
export type Tenant = (typeof TENANTS)[number];
/** Several keys a tenant, so that the per-key rate limit (600 a minute) does not bound the load. */
const KEYS_PER_TENANT = 8;
export const WORKERS_PER_TENANT = 4;
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A feed's event id from before its first event: on shards, every shard's position ("0.0.0"). */
export const FEED_START = Array(PROJECTION_SHARDS).fill(0).join(".");
/** Whether a feed's event id comes after `last`: no shard's position goes back, and one goes on. */
export function feedIdRose(last: string, id: string): boolean {
  const [was, now] = [last, id].map((text) => text.split(".").map(Number));
  if (now.length !== was.length || now.some((n) => !Number.isInteger(n))) return false;
  return now.every((n, i) => n >= was[i]) && now.some((n, i) => n > was[i]);
}

/** mulberry32: the same seed makes the same choices. */
let state = SEED;
export function random(): number {
  state = (state + 0x6d2b79f5) | 0;
  let t = Math.imul(state ^ (state >>> 15), 1 | state);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
export const chance = (p: number) => random() < p;
export const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
export const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];

export const keys = new Map<Tenant, string[]>(TENANTS.map((t) => [t, Array.from({ length: KEYS_PER_TENANT }, (_, i) => `chaos-${t}-${i}`)]));
export const apiKeys = JSON.stringify(
  Object.fromEntries(TENANTS.flatMap((t) => keys.get(t)!.map((k) => [createHash("sha256").update(k).digest("hex"), t]))),
);

export interface Job {
  id: string;
  tenant: Tenant;
  /** The submit's idempotency key and body, sent again to check the key still names the job. */
  key: string;
  body: string;
  /** The key of the submit its retries began from: its webhook's URL names it, and a retry's job keeps that URL. */
  lineage: string;
  webhook: boolean;
  /** Its `metadata.group`, which bulk operations select by. */
  group: number;
  /**
   * true once a delete was answered 204 or 404; "unknown" while a delete went unanswered, "bulk"
   * while a bulk operation on its group may remove it.
   */
  gone: boolean | "unknown" | "bulk";
  status?: string;
  error?: string | null;
  /** Made through the tenant's scoped token, whose `authorization` sends it again. */
  token?: string;
  /** A person rejected it at a request for input (answered 200): it must have failed for that. */
  rejected?: boolean;
  /** A cancel of it was answered 200: it must have ended cancelled. */
  cancelled?: boolean;
  /** Its `retention_seconds`: once it ends it is purged that long after, and answers 404. */
  retention_s?: number;
  /** Gone at the end of its retention, not by a delete. */
  purged?: boolean;
}

export const jobs: Job[] = [];
export const GROUPS = 8;
/** Groups (tenant/group) with a bulk operation under way, and how many each has had. */
export const bulkPending = new Set<string>();
export const bulkEpoch = new Map<string, number>();
export const problems: string[] = [];

/** A span of the run: from when a request was first sent to when it was answered. */
interface Span {
  from: number;
  to: number;
}
/** Keyed submits and retries answered only after a kill cut them short, each with its lineage and group. */
export const cutShort: (Span & { lineage: string; group: string; retry: boolean })[] = [];
/** Forced bulk deletes, each with its group (`tenant/group`). */
export const forcedBulkDeletes: (Span & { group: string })[] = [];
/**
 * Whether a webhook of a job no answer named may come from the lineage's request that a kill cut
 * short: its job, made before the kill, took its key, and a forced bulk delete of its group removed
 * it before the request was sent again and answered (a submit's repeat then makes a job of its own;
 * a retry's is refused 404 when the bulk delete took the old job too).
 */
export function unnamedButDeleted(lineage: string | null): boolean {
  const overlap = (a: Span, b: Span) => a.from <= b.to && b.from <= a.to;
  return cutShort.some((c) => c.lineage === lineage && forcedBulkDeletes.some((d) => d.group === c.group && overlap(c, d)));
}
export const tally = { kills: 0, submits: 0, unanswered: 0, cancels: 0, deletes: 0, retries: 0, answers: 0, races: 0, polls: 0, bulks: 0, purged: 0, token_submits: 0, token_refused: 0, short_reads: 0, short_expired: 0, s5xx: 0 };
export function problem(text: string) {
  problems.push(text);
  console.error(`  ! ${text}`);
}

/**
 * A 404 of a job with a retention is its purge, once it ended: from then on it is held to what a
 * delete must do (it answers 404 and is never listed again, its feed told it ended and then that it
 * was deleted, its webhook was delivered). False for any other job.
 */
export function purged(job: Job): boolean {
  if (job.retention_s === undefined) return false;
  job.gone = true;
  job.purged = true;
  tally.purged++;
  return true;
}

export const live = (tenant?: Tenant) => jobs.filter((j) => j.gone === false && (!tenant || j.tenant === tenant));
