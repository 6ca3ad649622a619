/**
 * `npm run bench`: the service under load on `wrangler dev` (127.0.0.1:8005, --log-level warn),
 * driven by autocannon in bounded runs. Every load figure is set against a baseline measured just
 * before it on the same server: GET /health, a route that touches no object. Submit and status
 * are also set against the floor (bench/floor/, on 127.0.0.1:8006): a Worker whose
 * submit only creates a job's Durable Object and writes one row and an alarm in it, and against
 * the floor of this design: the same submit with the two calls on the tenant's objects it must make,
 * in requests a second and in CPU per request. BENCH_MEMORY=1 keeps every server's state in memory.
 */
import autocannon from "autocannon";
import { peakRssDuring, treeCpuMs, treeRss } from "../test/e2e/procfs";
import { createServer } from "node:http";
import { BASE, startServer, stopServer, type DevServer } from "../test/e2e/server";
import { IN_MEMORY, releaseStateDirs, stateDir } from "./state";

const FLOOR_PORT = 8006;
/** A local webhook receiver that never answers, for cancel latency while a receiver stalls. */
const STALL_PORT = 8007;
/** Two more servers for the cost of shards: one projection and line on this port, 4 of each on the next. */
const SHARDS_PORT = 8008;
// How many jobs wait in line for the idle-CPU figure (100,000 on request: seeding runs at the submit rate).
const LINE_SIZE = Number(process.env.BENCH_LINE_SIZE ?? 5000);

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** Runs of which a figure takes many (list sizes, filters, shards): half as long, at least 2 s. */
const SHORT_SECONDS = Math.max(2, Math.ceil(SECONDS / 2));
// Seeding goes through the API at the rate jobs run to their end, so larger sets are opt-in
// (BENCH_LIST_SIZES=1000,10000,100000) and take correspondingly long.
const LIST_SIZES = (process.env.BENCH_LIST_SIZES ?? "100,1000").split(",").map(Number);
// A state directory kept from an earlier run (its path is printed at the start) is used as it is:
// only the jobs still missing from the largest list size are seeded.
const STATE = process.env.BENCH_STATE || undefined;
// Only the list figures, on the state as it is: no seeding, and jobs still queued there (say, in a
// copy of a seeded tenant's index without the jobs' own objects) are not waited for.
const LIST_ONLY = process.env.BENCH_LIST_ONLY === "1";
// Lists narrowed by tag and metadata at each of these sizes, on jobs delayed by a month: they only
// wait, so seeding goes at the submit rate (100,000 in minutes) rather than the rate jobs run.
const FILTER_SIZES = (process.env.BENCH_FILTER_SIZES ?? "1000").split(",").map(Number);
const MiB = 1024 * 1024;
/** The server counts as quiet once it uses at most this share of one core over this window. */
const QUIET_WINDOW_MS = 1000;
const QUIET_CPU_SHARE = 0.05;

type Run = autocannon.Result & { cpuPerRequest: number };
const rows: [string, string, string][] = [];
const report = (figure: string, value: string, against = "") => {
  rows.push([figure, value, against]);
  console.error(`  ${figure}: ${value} ${against}`);
};

let server: DevServer;
let floor: DevServer;

type LoadOptions = Partial<autocannon.Options> & { path?: string };

/** A bounded load run, with the CPU time the whole dev server (wrangler and workerd) spent per request. */
async function load(options: LoadOptions, target = server): Promise<Run> {
  const { path = "/", ...rest } = options;
  const cpuBefore = treeCpuMs(target.process.pid!);
  const result = await autocannon({ url: `${target.base}${path}`, connections: 16, duration: SECONDS, ...rest });
  return { ...result, cpuPerRequest: (treeCpuMs(target.process.pid!) - cpuBefore) / Math.max(1, result.requests.total) };
}

/** Throughput, latency and CPU per request of a load run. */
const describeRun = (result: Run) =>
  `${result.requests.average.toFixed(0)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, ${ms(result.cpuPerRequest)} CPU/req`;

/**
 * A load figure set against the bare route measured just before it, both on a quiet server, so
 * that the server's drift over the run (it holds more objects as it goes) falls on both alike.
 */
async function againstBare(figure: string, target: string, options: LoadOptions): Promise<Run> {
  await idle();
  const bare = await load({ path: "/health" });
  const result = await load(options);
  const ratio = `${pct(result.requests.average / bare.requests.average)} of bare (${bare.requests.average.toFixed(0)} req/s just before); CPU/req ${(result.cpuPerRequest / bare.cpuPerRequest).toFixed(1)}x`;
  report(figure, describeRun(result), `${ratio}${target}`);
  return result;
}

/** Rounds of each figure set against the floor, each figure the median of its rounds: one round's ratio moves by ±0.1. */
const FLOOR_ROUNDS = 3;

/**
 * A route set against the floor, in rounds: the same route on the floor Worker, then on the floor
 * of this design when one is given (the floor's route with the calls on the tenant's own objects
 * that this design must make), then the service's bare route and the route itself, each round
 * on a quiet server. Ratios are of requests per second; the second floor against the first is
 * the most any implementation of this design can reach.
 */
async function againstFloor(figure: string, target: string, options: LoadOptions, floorOptions: LoadOptions, designFloor?: { name: string; options: LoadOptions }) {
  const runs: { plain: Run; design?: Run; bare: Run; ours: Run }[] = [];
  for (let round = 0; round < FLOOR_ROUNDS; round++) {
    await idle();
    const plain = await load(floorOptions, floor);
    const design = designFloor && (await load(designFloor.options, floor));
    const bare = await load({ path: "/health" });
    const ours = await load(options);
    runs.push({ plain, design, bare, ours });
  }
  const rps = (run: Run) => run.requests.average;
  const cpu = (run: Run) => run.cpuPerRequest;
  const ratios = (name: string, ratio: (round: (typeof runs)[number]) => number, against: string) => {
    const each = runs.map(ratio);
    report(name, `${median(each).toFixed(2)} ${against}`, `rounds: ${each.map((x) => x.toFixed(2)).join(", ")}`);
  };
  const middle = [...runs].sort((a, b) => rps(a.ours) - rps(b.ours))[Math.floor(runs.length / 2)];
  report(figure, describeRun(middle.ours), `the median of ${FLOOR_ROUNDS} rounds`);
  ratios(`${figure} vs bare`, (r) => rps(r.ours) / rps(r.bare), "of the bare route just before");
  ratios(`${figure} vs the floor`, (r) => rps(r.ours) / rps(r.plain), `of the floor${target}`);
  // CPU per request, which the disk's waits do not enter: how many times the floor's work ours is.
  ratios(`${figure}, CPU per request`, (r) => cpu(r.ours) / cpu(r.plain), "x the floor's");
  if (!designFloor) return;
  ratios(`the floor of this design: ${designFloor.name}`, (r) => rps(r.design!) / rps(r.plain), "of the floor: the most this design can reach");
  ratios(`the floor of this design, CPU per request`, (r) => cpu(r.design!) / cpu(r.plain), "x the floor's");
  ratios(`${figure} vs the floor of this design`, (r) => rps(r.ours) / rps(r.design!), "of the floor of this design");
}

type Context = Record<string, string>;
const jobPath = (suffix: string) => (req: autocannon.Request, context: object) => ({ ...req, path: `/api/v1/runs/${(context as Context).id}${suffix}` });

const json = { "content-type": "application/json" };
const quickJob = JSON.stringify({ prompt: "bench", config: { simulate: { steps: 1, step_ms: 0 } } });
/** A quick job not due while a load run lasts: its submit is measured alone. */
const laterJob = JSON.stringify({ prompt: "bench", delay_seconds: SECONDS + 5, config: { simulate: { steps: 1, step_ms: 0 } } });
const laterSubmit: LoadOptions = { method: "POST", path: "/api/v1/runs", headers: json, body: laterJob };

async function submit(body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${BASE}/api/v1/runs`, { method: "POST", headers: json, body: JSON.stringify(body) });
  return ((await res.json()) as { job_id: string }).job_id;
}

async function finished(id: string): Promise<Record<string, unknown>> {
  for (;;) {
    const job = (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()) as Record<string, unknown>;
    if (job.retry_after === null) return job;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(1)} ms`;
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

async function throughput() {
  // The quick jobs submitted here run meanwhile on the same server, as they would in use.
  await againstBare("submit", "", { method: "POST", path: "/api/v1/runs", headers: json, body: quickJob });
  // Against the floor, whose jobs never run, the submit alone: its jobs may start only once the
  // run is over (then they run, and the next round waits for them).
  const floorSubmit = { method: "POST" as const, path: "/api/v1/runs", headers: json, body: quickJob };
  // The floor of this design: a submit must ask the tenant's line for a place (refused past the
  // queued limit, storing nothing) and enter the job in the tenant's list (where an idempotency
  // key is held), two calls on objects that already exist around the job's creation.
  await againstFloor("submit, its job not yet due", " (target ≥ 0.8)", laterSubmit, floorSubmit, {
    name: "a submit with its two tenant calls",
    options: { ...floorSubmit, path: "/api/v1/runs?tenant_calls=2" },
  });

  // Polling a job that has finished: the read alone, with no run of its own competing for the server.
  const id = await submit({ prompt: "status", config: { simulate: { steps: 1, step_ms: 0 } } });
  await finished(id);
  const floorRes = await fetch(`${floor.base}/api/v1/runs`, { method: "POST", headers: json, body: quickJob });
  const floorId = ((await floorRes.json()) as { job_id: string }).job_id;
  await againstFloor("status", " (target ≥ 0.95)", { path: `/api/v1/runs/${id}` }, { path: `/api/v1/runs/${floorId}` });

  const long = JSON.stringify({ prompt: "cycle", config: { simulate: { steps: 1, step_ms: 60_000 } } });
  const cycle = await againstBare("submit + cancel + delete, per request", "", {
    requests: [
      {
        method: "POST",
        path: "/api/v1/runs",
        headers: json,
        body: long,
        onResponse: (_status: number, body: string, context: object) => {
          (context as Context).id = (JSON.parse(body) as { job_id: string }).job_id;
        },
      },
      { method: "POST", setupRequest: jobPath("/cancel") },
      { method: "DELETE", setupRequest: jobPath("") },
    ],
  });
  // One object's rate, the bound of a tenant's line and projection: each job makes 2 calls on each.
  await idle();
  const calls = 50;
  const one = await load({ method: "POST", path: `/one-object?calls=${calls}` }, floor);
  report("one object, calls of one small write", `${(one.requests.average * calls).toFixed(0)} calls/s`, `${calls} calls per request on the floor Worker; a tenant's line and projection each take 2 calls per job`);
  report("submit + cancel + delete cycles", `${(cycle.requests.average / 3).toFixed(0)} cycles/s`, "three requests each");
}

async function seed(count: number) {
  let sent = 0;
  while (sent < count) {
    const batch = Math.min(count - sent, 20_000);
    await autocannon({
      url: BASE,
      connections: 32,
      amount: batch,
      requests: [
        {
          method: "POST",
          path: "/api/v1/runs",
          headers: json,
          setupRequest: (req: autocannon.Request) => {
            sent++;
            const session = sent % 10 === 0 ? "bench-filtered" : "bench";
            return { ...req, body: JSON.stringify({ prompt: "seed", session_id: session, config: { simulate: { steps: 1, step_ms: 0 } } }) };
          },
        },
      ],
    });
  }
}

/**
 * Waits until no job of the tenant is queued or running, and then until the server is quiet:
 * objects that have just gone idle are closed some seconds later, and closing writes their
 * databases back, which would otherwise land in the next figure.
 */
async function idle() {
  if (!LIST_ONLY) await noJobRunning();
  await quiet();
}

async function noJobRunning() {
  for (;;) {
    // A server working through a long line can be slow to answer, or answer that an object is
    // overloaded: ask again.
    const stats = await fetch(`${BASE}/stats`, { signal: AbortSignal.timeout(60_000) })
      .then((res) => (res.ok ? (res.json() as Promise<{ by_status: Record<string, number> }>) : null))
      .catch(() => null);
    if (stats && stats.by_status.queued + stats.by_status.running === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function quiet(maxMs = 60_000, target = server) {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const before = treeCpuMs(target.process.pid!);
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS));
    if (treeCpuMs(target.process.pid!) - before <= QUIET_WINDOW_MS * QUIET_CPU_SHARE) return;
  }
}

async function listScaling() {
  let seeded = (await (await fetch(`${BASE}/stats`)).json() as { total_jobs: number }).total_jobs;
  const sizes = LIST_ONLY ? [seeded] : LIST_SIZES;
  const firstPages: Record<number, number> = {};
  for (const size of sizes) {
    if (seeded < size) {
      const started = Date.now();
      await seed(size - seeded);
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
async function seedTagged(count: number, from: number) {
  let n = from;
  await autocannon({
    url: BASE,
    connections: 32,
    amount: count,
    requests: [
      {
        method: "POST",
        path: "/api/v1/runs",
        headers: json,
        setupRequest: (req: autocannon.Request) => {
          n++;
          const tags = n % 10 === 0 ? ["bench-filter", "bench-tenth"] : ["bench-filter"];
          return { ...req, body: JSON.stringify({ prompt: "seed", tags, metadata: { shard: String(n % 100) }, delay_seconds: 2_592_000 }) };
        },
      },
    ],
  });
}

async function filteredLists() {
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
async function shardedReads() {
  const start = (port: number, inspector: number, vars: string[]) =>
    startServer(stateDir("shards"), ["--inspector-port", String(inspector), ...vars.flatMap((v) => ["--var", v])], port);
  const one = await start(SHARDS_PORT, 9240, []);
  const four = await start(SHARDS_PORT + 1, 9241, ["PROJECTION_SHARDS:4", "LINE_SHARDS:4"]);
  try {
    const waiting = JSON.stringify({ prompt: "sharded", tags: ["bench-shards"], delay_seconds: 2_592_000 });
    for (const target of [one, four]) {
      await autocannon({ url: target.base, connections: 16, amount: 1000, requests: [{ method: "POST", path: "/api/v1/runs", headers: json, body: waiting }] });
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
        `${pct(sharded.requests.average / single.requests.average)} of one shard (${single.requests.average.toFixed(0)} req/s, p50 ${single.latency.p50} ms)`,
      );
    }
  } finally {
    await stopServer(four);
    await stopServer(one);
  }
}

async function deletes() {
  const timed = async (outputBytes: number) => {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const id = await submit({ prompt: "delete", config: { simulate: { steps: 4, step_ms: 0, output_bytes: outputBytes } } });
      await finished(id);
      const started = performance.now();
      await fetch(`${BASE}/api/v1/runs/${id}`, { method: "DELETE" });
      times.push(performance.now() - started);
    }
    return median(times);
  };
  const empty = await timed(0);
  const big = await timed(100 * MiB);
  report("delete, empty output", ms(empty), "median of 3");
  report("delete, 100 MiB output", ms(big), `${(big / empty).toFixed(2)}x of empty (target ≤ 2x)`);
}

async function watchers(count: number) {
  const id = await submit({ prompt: "watched", config: { simulate: { steps: 100, step_ms: 5 } } });
  const started = performance.now();
  let completeAt = 0;
  const totals = await Promise.all(
    Array.from({ length: count }, async () => {
      const text = await (await fetch(`${BASE}/api/v1/runs/${id}/stream`)).text();
      completeAt = Math.max(completeAt, Date.now());
      return text.split("\n").filter((l) => l.startsWith("id: ")).length;
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const job = await finished(id);
  const lag = completeAt - Date.parse(String(job.completed_at));
  const events = totals.reduce((a, b) => a + b, 0);
  report(`stream to ${count} watcher${count > 1 ? "s" : ""}`, `${(events / seconds).toFixed(0)} events/s delivered (${totals[0]} events each)`, `last event arrived ${lag} ms after it was written`);
}

async function cancelLatency() {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const id = await submit({ prompt: "cancel", config: { simulate: { steps: 3, step_ms: 2000 } } });
    for (;;) {
      const job = (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()) as { progress: { current_step: string | null } };
      if (job.progress.current_step) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const started = performance.now();
    await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" });
    times.push(performance.now() - started); // the 200 comes after the step in flight has stopped
  }
  report("cancel latency (request to the last output written)", ms(median(times)), "median of 5, mid-step");
}

/**
 * Cancel and delete of running jobs whose webhook receiver never answers: neither request waits
 * for the receiver (their webhooks go out from the jobs' alarms, and stall there).
 */
async function cancelWithStalledReceiver() {
  const receiver = createServer(() => {}); // takes every request and never answers
  await new Promise<void>((resolve) => receiver.listen(STALL_PORT, "127.0.0.1", resolve));
  try {
    const cancels: number[] = [];
    const deletes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const id = await submit({ prompt: "stalled hook", webhook_url: `http://127.0.0.1:${STALL_PORT}/hook`, config: { simulate: { steps: 3, step_ms: 2000 } } });
      let started = performance.now();
      await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" });
      cancels.push(performance.now() - started);
      await new Promise((r) => setTimeout(r, 200)); // its webhook is now in flight, held by the receiver
      started = performance.now();
      await fetch(`${BASE}/api/v1/runs/${id}`, { method: "DELETE" });
      deletes.push(performance.now() - started);
    }
    report("cancel, webhook receiver stalled", ms(median(cancels)), "median of 5, a running job");
    report("delete, webhook in flight to a stalled receiver", ms(median(deletes)), "median of 5");
  } finally {
    receiver.closeAllConnections();
    receiver.close();
  }
}

/**
 * The server's CPU while a long line waits and nothing frees: every slot is held by a job that
 * runs for minutes, and LINE_SIZE jobs wait behind them. Set against the same server idle.
 */
async function idleLine() {
  await quiet();
  const window = 10_000;
  const emptyCpu = await cpuOver(window);
  const emptySubmit = await load(laterSubmit);
  const holders = await Promise.all(Array.from({ length: 10 }, () => submit({ prompt: "holder", config: { simulate: { steps: 1, step_ms: 600_000 } } })));
  const started = Date.now();
  await autocannon({ url: BASE, connections: 16, amount: LINE_SIZE, requests: [{ method: "POST", path: "/api/v1/runs", headers: json, body: quickJob }] });
  console.error(`  (${LINE_SIZE} jobs in line in ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  // Thousands of objects just created are closed, and written back, over the next minutes.
  await quiet(300_000);
  const lineCpu = await cpuOver(window);
  report(`CPU while ${LINE_SIZE} jobs wait and nothing frees`, `${(lineCpu / (window / 1000)).toFixed(1)} ms/s`, `same server with an empty line: ${(emptyCpu / (window / 1000)).toFixed(1)} ms/s`);
  // What the line costs a submit once it is long: the same submit as on the empty line.
  const lineSubmit = await load(laterSubmit);
  report(
    `submit, its job not yet due, with ${LINE_SIZE} jobs in line`,
    describeRun(lineSubmit),
    `${pct(lineSubmit.requests.average / emptySubmit.requests.average)} of the same submit on the empty line (${emptySubmit.requests.average.toFixed(0)} req/s); CPU/req ${(lineSubmit.cpuPerRequest / emptySubmit.cpuPerRequest).toFixed(2)}x`,
  );
  // Let the line drain, so that the next figures start on a quiet server.
  for (const id of holders) await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" });
}

async function cpuOver(windowMs: number): Promise<number> {
  const before = treeCpuMs(server.process.pid!);
  await new Promise((r) => setTimeout(r, windowMs));
  return treeCpuMs(server.process.pid!) - before;
}

async function streamingMemory() {
  const id = await submit({ prompt: "memory", config: { simulate: { steps: 4, step_ms: 0, output_bytes: 100 * MiB } } });
  await finished(id);
  const baseline = treeRss(server.process.pid!);
  const { peak } = await peakRssDuring(server.process.pid!, async () => {
    const res = await fetch(`${BASE}/api/v1/runs/${id}/output`);
    for await (const _ of res.body as unknown as AsyncIterable<Uint8Array>);
  });
  report("memory growth while streaming 100 MiB", `${((peak - baseline) / MiB).toFixed(1)} MiB`, `baseline ${(baseline / MiB).toFixed(0)} MiB (target < 64 MiB)`);
}

async function main() {
  // Webhooks may go to the local receiver of the stalled-receiver figure; the filtered lists seed up
  // to 100,000 waiting jobs beside any others.
  server = await startServer(STATE ?? stateDir("bench"), ["--var", "WEBHOOK_ALLOW_PRIVATE:true", "--var", "MAX_QUEUED_PER_TENANT:1000000"]); // --log-level warn, on loopback
  floor = await startServer(stateDir("floor"), ["--config", "bench/floor/wrangler.jsonc", "--inspector-port", "9239"], FLOOR_PORT);
  try {
    console.error(`benchmarking ${BASE} (${SECONDS} s per load run), state ${IN_MEMORY ? "in memory, " : ""}in ${server.persistTo}`);
    // Each figure starts on a quiet server: no job running and the last one's writes settled.
    await idle();
    const baseline = await load({ path: "/health" });
    report("bare route (GET /health)", describeRun(baseline), "baseline");
    const all: Record<string, () => Promise<void>> = {
      throughput,
      deletes,
      watchers: async () => {
        await watchers(1);
        await idle();
        await watchers(50);
      },
      cancel: cancelLatency,
      stalled: cancelWithStalledReceiver,
      memory: streamingMemory,
      line: idleLine,
      lists: listScaling,
      filters: filteredLists,
      shards: shardedReads,
    };
    // BENCH_ONLY=throughput,line runs just those figures.
    const only = (process.env.BENCH_ONLY ?? "").split(",").filter(Boolean);
    const figures = LIST_ONLY ? [listScaling] : Object.entries(all).filter(([name]) => only.length === 0 || only.includes(name)).map(([, run]) => run);
    for (const figure of figures) {
      await idle();
      await figure();
    }
    await idle();
    const recheck = await load({ path: "/health" });
    report("bare route again, at the end", describeRun(recheck), `${pct(recheck.requests.average / baseline.requests.average)} of the first baseline`);
  } finally {
    await stopServer(floor);
    await stopServer(server);
    releaseStateDirs();
  }
  const width = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), 6));
  console.log(["figure", "value", "against"].map((h, i) => h.padEnd(width[i])).join(" | "));
  console.log(width.map((w) => "-".repeat(w)).join("-|-"));
  for (const row of rows) console.log(row.map((c, i) => c.padEnd(width[i])).join(" | "));
}

await main();
