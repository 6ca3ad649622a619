/**
 * The list's figures: its first page, a deep page and a filtered page as the tenant grows; lists
 * narrowed by tags and metadata on jobs that only wait; and what shards cost the reads.
 */
import { BASE, startServer, stopServer } from "../test/e2e/server";
import { describeRun, idle, json, LIST_ONLY, load, type LoadOptions, pct, quiet, report, seedJobs, SHORT_SECONDS } from "./measure";
import { stateDir } from "./state";

/** Two more servers for the cost of shards: one projection and line on this port, 4 of each on the next. */
const SHARDS_PORT = 8008;
// Seeding goes through the API at the rate jobs run to their end, so larger sets are opt-in
// (BENCH_LIST_SIZES=1000,10000,100000) and take correspondingly long.
const LIST_SIZES = (process.env.BENCH_LIST_SIZES ?? "100,1000").split(",").map(Number);
// Lists narrowed by tag and metadata at each of these sizes, on jobs delayed by a month: they only
// wait, so seeding goes at the submit rate (100,000 in minutes) rather than the rate jobs run.
const FILTER_SIZES = (process.env.BENCH_FILTER_SIZES ?? "1000").split(",").map(Number);

/** Seeds `count` quick jobs, one in ten in the session that the filtered page reads. */
const seed = (count: number, from: number) =>
  seedJobs(count, (n) => JSON.stringify({ prompt: "seed", session_id: n % 10 === 0 ? "bench-filtered" : "bench", config: { simulate: { steps: 1, step_ms: 0 } } }), from);

export async function listScaling() {
  let seeded = (await (await fetch(`${BASE}/stats`)).json() as { total_jobs: number }).total_jobs;
  const sizes = LIST_ONLY ? [seeded] : LIST_SIZES;
  const firstPages: Record<number, number> = {};
  for (const size of sizes) {
    if (seeded < size) {
      const started = Date.now();
      await seed(size - seeded, seeded);
      await idle();
      seeded = size;
      console.error(`  (seeded ${size} jobs in ${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }
    const deepPage = Math.max(1, Math.floor(size / 20 / 2));
    const variants: [string, string][] = [
      ["first page", "/api/v1/runs"],
      [`deep page (${deepPage})`, `/api/v1/runs?page=${deepPage}`],
      ["filtered page", "/api/v1/runs?session_id=bench-filtered"],
    ];
    for (const [name, path] of variants) {
      const result = await load({ path, connections: 4, duration: SHORT_SECONDS });
      if (name === "first page") firstPages[size] = result.latency.p50;
      const growth = firstPages[sizes[0]] ? ` (${(result.latency.p50 / Math.max(0.1, firstPages[sizes[0]])).toFixed(1)}x of the first page at ${sizes[0]})` : "";
      report(`list, ${name}, ${size} jobs`, `p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms`, name === "first page" ? growth : "");
    }
  }
  if (sizes.length < 2) return;
  const small = firstPages[sizes[0]];
  const large = firstPages[sizes.at(-1)!];
  report(`list p50 at ${sizes.at(-1)} vs ${sizes[0]} jobs`, `${(large / Math.max(0.1, small)).toFixed(2)}x`, "target ≤ 2x");
}

/** Submits `count` delayed jobs: every one tagged bench-filter, one in ten also bench-tenth, metadata shard = n % 100. */
const seedTagged = (count: number, from: number) =>
  seedJobs(
    count,
    (n) => {
      const tags = n % 10 === 0 ? ["bench-filter", "bench-tenth"] : ["bench-filter"];
      return JSON.stringify({ prompt: "seed", tags, metadata: { shard: String(n % 100) }, delay_seconds: 2_592_000 });
    },
    from,
  );

export async function filteredLists() {
  const firsts: Record<string, Record<number, number>> = {};
  let seeded = 0;
  for (const size of FILTER_SIZES) {
    const started = Date.now();
    await seedTagged(size - seeded, seeded);
    seeded = size;
    await quiet(300_000);
    console.error(`  (${size} tagged jobs waiting, seeded in ${((Date.now() - started) / 1000).toFixed(0)} s)`);
    const variants: [string, string][] = [
      ["one tag on every job", "?tag=bench-filter"],
      ["one tag on 1 in 10", "?tag=bench-tenth"],
      ["tag and status", "?tag=bench-filter&status=queued"],
      ["two tags", "?tag=bench-filter&tag=bench-tenth"],
      ["tag and metadata (1 in 100)", "?tag=bench-filter&metadata.shard=7"],
      ["tag, deep page", `?tag=bench-filter&page=${Math.max(1, Math.floor(size / 20 / 2))}`],
      ["unfiltered first page", ""],
    ];
    for (const [name, query] of variants) {
      const result = await load({ path: `/api/v1/runs${query}`, connections: 4, duration: SHORT_SECONDS });
      (firsts[name] ??= {})[size] = result.latency.p50;
      report(`list, ${name}, ${size} jobs`, `p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms`);
    }
  }
  if (FILTER_SIZES.length > 1) {
    const [small, large] = [FILTER_SIZES[0], FILTER_SIZES.at(-1)!];
    for (const [name, bySize] of Object.entries(firsts)) {
      report(`filtered list p50 at ${large} vs ${small} jobs: ${name}`, `${(bySize[large] / Math.max(0.1, bySize[small])).toFixed(2)}x`, "target ≤ 2x");
    }
  }
  // The seeded jobs go, so that the next figures start on an empty line.
  await fetch(`${BASE}/api/v1/runs/bulk/delete`, { method: "POST", headers: json, body: JSON.stringify({ tags: ["bench-filter"], force: true }) });
}

/**
 * What shards cost the reads: two fresh servers, one tenant on one projection and one line, the
 * other on 4 shards and 4 lines, each holding the same 1,000 waiting jobs. Submit, list and
 * stats on the sharded one as a share of the same on the other. (Locally every object shares one
 * thread, so shards cannot add throughput here; on Cloudflare each is an object of its own: see
 * docs/SCALE.md.)
 */
export async function shardedReads() {
  const start = (port: number, inspector: number, vars: string[]) =>
    startServer(stateDir("shards"), ["--inspector-port", String(inspector), ...vars.flatMap((v) => ["--var", v])], port);
  const one = await start(SHARDS_PORT, 9240, []);
  const four = await start(SHARDS_PORT + 1, 9241, ["PROJECTION_SHARDS:4", "LINE_SHARDS:4"]);
  try {
    const waiting = JSON.stringify({ prompt: "sharded", tags: ["bench-shards"], delay_seconds: 2_592_000 });
    for (const target of [one, four]) {
      await seedJobs(1000, () => waiting, 0, target);
      await quiet(60_000, target);
    }
    const variants: [string, LoadOptions][] = [
      ["submit (a waiting job)", { path: "/api/v1/runs", method: "POST", headers: json, body: waiting, duration: SHORT_SECONDS }],
      ["list, first page", { path: "/api/v1/runs", connections: 4, duration: SHORT_SECONDS }],
      ["list by tag", { path: "/api/v1/runs?tag=bench-shards", connections: 4, duration: SHORT_SECONDS }],
      ["stats", { path: "/stats", connections: 4, duration: SHORT_SECONDS }],
    ];
    for (const [name, options] of variants) {
      await quiet(60_000, one);
      const single = await load(options, one);
      await quiet(60_000, four);
      const sharded = await load(options, four);
      report(
        `${name}, 4 shards and 4 lines`,
        describeRun(sharded),
        `${pct(sharded.rate / single.rate)} of one shard (${single.rate.toFixed(0)} req/s, p50 ${single.latency.p50} ms)`,
      );
    }
  } finally {
    await stopServer(four);
    await stopServer(one);
  }
}
