/**
 * A tenant's projection read as one over its shards (src/tenant/shards.ts): a list page merged
 * by sequence number, stats summed, a bulk operation's matches gathered, the live feed merged
 * with one event id holding every shard's position. With one shard, each is that shard's own
 * answer, as before there were shards.
 */
import { hasEntries, type DayUsage, type Stats } from "../schemas";
import { PING } from "../run/events";
import { STATUSES, type Status } from "../run/transitions";
import { MAX_BEHIND, type RunFilter } from "./feed";
import type { BulkFilter, ListFilter, ListPage } from "./listing";
import { projectionNames, projectionShards } from "./shards";

/** How deep offset paging (`page`) reads on a sharded tenant: each shard's first rows up to this many. */
export const MAX_SHARDED_OFFSET = 10_000;

const shard = (env: Env, name: string) => env.PROJECTIONS.getByName(name);

/**
 * A page of the tenant's list. On several shards each is asked for the rows the page could
 * hold (from the cursor, or its first `page × page_size` rows), and they are merged newest first.
 */
export async function listJobs(env: Env, tenant: string, query: ListFilter, labelled: boolean): Promise<ListPage> {
  const read = (name: string, q: ListFilter) => (labelled ? shard(env, name).listByLabels(q) : shard(env, name).list(q));
  const names = projectionNames(env, tenant);
  if (names.length === 1) return read(names[0], query);
  const offset = query.before === undefined ? (query.page - 1) * query.page_size : 0;
  const pages = await Promise.all(names.map((name) => read(name, { ...query, page: 1, page_size: offset + query.page_size })));
  const rows = pages.flatMap((p) => p.jobs.map((job, i) => ({ job, seq: p.seqs[i] }))).sort((a, b) => b.seq - a.seq);
  const page = rows.slice(offset, offset + query.page_size);
  const more = rows.length > offset + query.page_size || pages.some((p) => p.next !== null);
  return {
    jobs: page.map((r) => r.job),
    seqs: page.map((r) => r.seq),
    total: pages.reduce((n, p) => n + p.total, 0),
    next: more && page.length > 0 ? page[page.length - 1].seq : null,
  };
}

/** The tenant's counts and usage: the sum of its shards'. */
export async function tenantStats(env: Env, tenant: string): Promise<Stats> {
  const all = await Promise.all(projectionNames(env, tenant).map((name) => shard(env, name).stats()));
  if (all.length === 1) return all[0];
  const by_status = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<Status, number>;
  const usage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, model_calls: 0 };
  const days = new Map<string, DayUsage>();
  for (const stats of all) {
    for (const status of STATUSES) by_status[status] += stats.by_status[status] ?? 0;
    addUsage(usage, stats.usage);
    for (const day of stats.usage_by_day) {
      const held = days.get(day.day);
      if (held) addUsage(held, day);
      else days.set(day.day, { ...day });
    }
  }
  // The days of the first shard's answer (they agree but for a read across midnight).
  const usage_by_day = all[0].usage_by_day.map((d) => days.get(d.day)!);
  return { total_jobs: Object.values(by_status).reduce((a, b) => a + b, 0), by_status, usage, usage_by_day };
}

type Tokens = { prompt_tokens: number; completion_tokens: number; total_tokens: number; model_calls: number };
function addUsage(into: Tokens, from: Tokens): void {
  into.prompt_tokens += from.prompt_tokens;
  into.completion_tokens += from.completion_tokens;
  into.total_tokens += from.total_tokens;
  into.model_calls += from.model_calls;
}

/** The ids a bulk operation's filter matches, at most `limit` (one more says there are more). */
export async function matchingJobs(
  env: Env,
  tenant: string,
  filter: BulkFilter,
  limit: number,
): Promise<string[]> {
  const byMetadata = hasEntries(filter.metadata);
  const match = (name: string) => (byMetadata ? shard(env, name).matchingByMetadata(filter, limit) : shard(env, name).matching(filter, limit));
  const all = await Promise.all(projectionNames(env, tenant).map(match));
  return all.flat().slice(0, limit + 1);
}

/**
 * A feed position from Last-Event-ID: one number per shard, joined by `.` (one number alone on
 * one shard). A single number on several shards is the first shard's, from before it had more:
 * the others start from now. Undefined: from now; null: malformed.
 */
export function feedPositions(env: Env, lastEventId: string | undefined): (number | null)[] | null {
  const shards = projectionShards(env);
  if (lastEventId === undefined) return Array(shards).fill(null);
  const parts = lastEventId.trim().split(".");
  if (!parts.every((p) => /^\d{1,15}$/.test(p))) return null;
  if (parts.length === 1) return [Number(parts[0]), ...Array(shards - 1).fill(null)];
  return parts.length === shards ? parts.map(Number) : null;
}

/**
 * The tenant's live feed from `positions`. On several shards each one's feed is read and its
 * events passed on in the order they come, each with an id holding every shard's position at
 * that event, so that resuming from it misses nothing and repeats nothing; pings come from the
 * first shard's feed. When any shard's feed ends, or the client falls far behind, the merged one
 * ends (the client resumes).
 */
export async function watchFeed(env: Env, tenant: string, filter: RunFilter, positions: (number | null)[]): Promise<ReadableStream<Uint8Array>> {
  const names = projectionNames(env, tenant);
  if (names.length === 1) return (await shard(env, names[0]).watch(filter, positions[0])).body;
  // A shard watched from now is read from its newest change, so that its position is known from the start.
  const from = await Promise.all(names.map((name, i) => positions[i] ?? shard(env, name).feedHead()));
  const bodies = await Promise.all(names.map(async (name, i) => (await shard(env, name).watch(filter, from[i])).body));
  return mergeFeeds(bodies, from);
}

/** The shards' feeds, read from `from`, as one: each event passed on with every shard's position as its id. */
function mergeFeeds(bodies: ReadableStream<Uint8Array>[], from: number[]): ReadableStream<Uint8Array> {
  const readers = bodies.map((body) => body.pipeThrough(new TextDecoderStream()).getReader());
  const at = [...from];
  const encoder = new TextEncoder();
  let closed = false;
  const stop = (controller?: ReadableStreamDefaultController<Uint8Array>) => {
    if (closed) return;
    closed = true;
    for (const reader of readers) reader.cancel().catch(() => {});
    try {
      controller?.close();
    } catch {
      // the client has gone
    }
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const pass = (i: number, block: string) => {
        if (closed) return;
        if (block === PING) {
          if (i === 0) controller.enqueue(encoder.encode(PING));
          return;
        }
        const id = /^id: (\d+)$/m.exec(block);
        if (id) at[i] = Number(id[1]);
        controller.enqueue(encoder.encode(block.replace(/^id: \d+$/m, `id: ${at.join(".")}`)));
      };
      // As one shard's feed does: a watcher far behind its connection is let go, and resumes.
      const enough = () => closed || (controller.desiredSize ?? 0) < -MAX_BEHIND;
      readers.forEach((reader, i) => void relayBlocks(reader, (block) => pass(i, block), enough).then(() => stop(controller)));
    },
    cancel: () => stop(),
  });
}

/**
 * Hands each of a feed's blocks (an event or a ping, up to its blank line) to `pass`, until the
 * feed ends or fails, or `enough` says so once a read's blocks are passed.
 */
async function relayBlocks(reader: ReadableStreamDefaultReader<string>, pass: (block: string) => void, enough: () => boolean): Promise<void> {
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      let end: number;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        pass(buffered.slice(0, end + 2));
        buffered = buffered.slice(end + 2);
      }
      if (enough()) return;
    }
  } catch {
    // a shard's feed failed: the merged one ends, and the client resumes
  }
}
