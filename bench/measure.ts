/**
 * How the benchmark takes a figure: bounded load runs with autocannon against the service or the
 * floor, each with the CPU the dev server spent per request; a figure set against the bare route
 * or the floor; waiting until the server is quiet; the report every figure adds a row to.
 */
import autocannon from "autocannon";
import { treeCpuMs, treeOpenFiles } from "../test/e2e/procfs";
import { BASE, type DevServer } from "../test/e2e/server";

export const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/**
 * A load that makes an object a request (a submit) stops after this many requests, if its time has
 * not run out first. A dev server keeps each object it made open for some seconds after its last
 * request, and once it holds about 2,600 open at once (the service's jobs; about 3,100 of the
 * floor's), SQLite in workerd fails with SQLITE_NOMEM: from there submits fail. The floor's
 * submit reached that within a 5 s load. Capped, each side makes at most as many objects.
 */
export const OBJECTS_PER_LOAD = Number(process.env.BENCH_OBJECTS_PER_LOAD ?? 2000);
/** Runs of which a figure takes many (list sizes, filters, shards): half as long, at least 2 s. */
export const SHORT_SECONDS = Math.max(2, Math.ceil(SECONDS / 2));
// Only the list figures, on the state as it is: no seeding, and jobs still queued there (say, in a
// copy of a seeded tenant's index without the jobs' own objects) are not waited for.
export const LIST_ONLY = process.env.BENCH_LIST_ONLY === "1";
/** The server counts as quiet once it uses at most this share of one core over this window. */
const QUIET_WINDOW_MS = 1000;
const QUIET_CPU_SHARE = 0.05;
/**
 * ...and holds at most this many more open files than when it started: the few objects of a
 * tenant that stay in use (its line and projection), not the objects an earlier load made.
 */
const QUIET_OPEN_FILES = 64;

/** The service and the floor, once the run has started them. */
export let server: DevServer;
export let floor: DevServer;
/** What each server held open when it started. */
const restingFiles = new Map<DevServer, number>();
export function useServers(service: DevServer, floorServer: DevServer): void {
  server = service;
  floor = floorServer;
  for (const started of [service, floorServer]) restingFiles.set(started, treeOpenFiles(started.process.pid!));
}

/**
 * A load's figures are of the requests it served (2xx): `rate` a second, and the CPU per request
 * served. `failed`: the requests that were answered otherwise, or not at all; a load with any is
 * named on stderr, and every round line says how many, since a server that fails fast looks fast.
 */
type Run = autocannon.Result & { rate: number; failed: number; cpuPerRequest: number };
const rows: [string, string, string][] = [];
export const report = (figure: string, value: string, against = "") => {
  rows.push([figure, value, against]);
  console.error(`  ${figure}: ${value} ${against}`);
};

/** The report, as a table on stdout. */
export function printReport(): void {
  const width = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), 6));
  console.log(["figure", "value", "against"].map((h, i) => h.padEnd(width[i])).join(" | "));
  console.log(width.map((w) => "-".repeat(w)).join("-|-"));
  for (const row of rows) console.log(row.map((c, i) => c.padEnd(width[i])).join(" | "));
}

export type LoadOptions = Partial<autocannon.Options> & { path?: string };

/** A bounded load run, with the CPU time the whole dev server (wrangler and workerd) spent per request. */
export async function load(options: LoadOptions, target = server): Promise<Run> {
  const { path = "/", ...rest } = options;
  const cpuBefore = treeCpuMs(target.process.pid!);
  // The load lasts until its last answer: autocannon ends a load that stopped at its count of
  // requests only at its next whole second, and its own duration says so.
  const started = performance.now();
  let last = started;
  const answered = () => void (last = performance.now());
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const run = { url: `${target.base}${path}`, connections: 16, duration: SECONDS, ...rest };
    const instance = autocannon(run, (error, done) => (error ? reject(error) : resolve(done)));
    instance.on("response", answered);
    instance.on("reqError", answered);
  });
  const cpu = treeCpuMs(target.process.pid!) - cpuBefore;
  const served = result["2xx"];
  const failed = result.non2xx + result.errors;
  if (failed > 0) console.error(`  ! ${failed} of ${served + failed} requests to ${target.base}${path} failed: ${failures(result)}`);
  return { ...result, rate: served / Math.max(0.01, (last - started) / 1000), failed, cpuPerRequest: cpu / Math.max(1, served) };
}

/** What a load's failures were: the count of each status other than 2xx, and of connection errors. */
function failures(result: autocannon.Result): string {
  const codes = Object.entries(result.statusCodeStats ?? {}).filter(([code]) => !code.startsWith("2"));
  const parts = codes.map(([code, { count }]) => `${count ?? 0} answered ${code}`);
  if (result.errors > 0) parts.push(`${result.errors} connection errors (${result.timeouts} timeouts)`);
  return parts.join(", ");
}

/** Throughput, latency and CPU per request of a load run. */
export const describeRun = (result: Run) =>
  `${result.rate.toFixed(0)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, ${ms(result.cpuPerRequest)} CPU/req`;

/**
 * A load figure set against the bare route measured just before it, both on a quiet server, so
 * that the server's drift over the run (it holds more objects as it goes) falls on both alike.
 */
export async function againstBare(figure: string, target: string, options: LoadOptions): Promise<Run> {
  await idle();
  const bare = await load({ path: "/health" });
  const result = await load(options);
  const ratio = `${pct(result.rate / bare.rate)} of bare (${bare.rate.toFixed(0)} req/s just before); CPU/req ${(result.cpuPerRequest / bare.cpuPerRequest).toFixed(1)}x`;
  report(figure, describeRun(result), `${ratio}${target}`);
  return result;
}

/**
 * Rounds of each figure set against the floor (`BENCH_ROUNDS`), each figure the median of its
 * rounds: one round's ratio moves by 0.15 and more on a shared machine, whose speed also drifts.
 */
const FLOOR_ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
/** Rounds taken before those, and not counted (BENCH_WARM_UP_ROUNDS=0: none). */
const WARM_UP_ROUNDS = Math.max(0, Number(process.env.BENCH_WARM_UP_ROUNDS ?? 1));
/** What each load of a round is called in its line of the output. */
export const LOAD_NAMES = { plain: "the floor", design: "the floor of this design", bare: "the bare route", ours: "ours" };

/**
 * Loads taken in turn, in rounds, every other round in the reverse order, so that a machine
 * speeding up or slowing down during a round favours no side; each load once `settle` has
 * waited for the servers. Each round's results by name, in the order taken, also to `taken`.
 */
export async function inTurns<N extends string, R>(
  rounds: number,
  loads: [N, () => Promise<R>][],
  settle: () => Promise<void>,
  taken: (round: Partial<Record<N, R>>, n: number) => void,
): Promise<Partial<Record<N, R>>[]> {
  const results: Partial<Record<N, R>>[] = [];
  for (let n = 0; n < rounds; n++) {
    const round: Partial<Record<N, R>> = {};
    for (const [name, take] of n % 2 === 0 ? loads : [...loads].reverse()) {
      await settle();
      round[name] = await take();
    }
    results.push(round);
    taken(round, n);
  }
  return results;
}

/**
 * Both servers have run the service's earlier jobs and are quiet. They share the machine: what
 * one does after a load (closing the objects it made) would slow whichever load comes next, on
 * either server.
 */
export async function bothQuiet(): Promise<void> {
  await idle();
  await quiet(60_000, floor);
}

/**
 * A route set against the floor, in rounds: the same route on the floor Worker, the floor of this
 * design when one is given (the floor's route with the calls on the tenant's own objects that this
 * design must make), the service's bare route and the route itself, each once both servers are
 * quiet. Every other round takes them in the reverse order, so that a machine speeding up or
 * slowing down during a round favours neither side. Ratios are of requests per second; the
 * second floor against the first is the most any implementation of this design can reach.
 */
export async function againstFloor(figure: string, target: string, options: LoadOptions, floorOptions: LoadOptions, designFloor?: { name: string; options: LoadOptions }) {
  type Round = { plain: Run; design?: Run; bare: Run; ours: Run };
  type Take = [keyof Round, () => Promise<Run>];
  const loads: Take[] = [
    ["plain", () => load(floorOptions, floor)],
    ...(designFloor ? [["design", () => load(designFloor.options, floor)] as Take] : []),
    ["bare", () => load({ path: "/health" })],
    ["ours", () => load(options)],
  ];
  // Each load's own figures, in the order taken: which side a round's ratio moved with.
  const told = (which: string) => (round: Partial<Round>) => {
    const taken = Object.entries(round).map(([name, run]) => `${LOAD_NAMES[name as keyof Round]} ${run.rate.toFixed(0)} req/s, ${ms(run.cpuPerRequest)} CPU${run.failed > 0 ? `, ${run.failed} failed` : ""}`);
    console.log(`    ${figure}, ${which}: ${taken.join("; ")}`);
  };
  // A round first that is not counted: a server's first loads of a route run slower while it warms
  // (the floor's first submit load at about two thirds of the rate of its later ones), and the
  // floor's Worker has served nothing before its first, where the service has served the figures
  // before this one. Counted, that round set a warmed service against a cold floor.
  await inTurns(WARM_UP_ROUNDS, loads, bothQuiet, told("warm-up round, not counted"));
  const runs = (await inTurns(FLOOR_ROUNDS, loads, bothQuiet, (round, n) => told(`round ${n + 1}`)(round))) as Round[];
  const rps = (run: Run) => run.rate;
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

export type Context = Record<string, string>;
export const jobPath = (suffix: string) => (req: autocannon.Request, context: object) => ({ ...req, path: `/api/v1/runs/${(context as Context).id}${suffix}` });

export const json = { "content-type": "application/json" };
export const quickJob = JSON.stringify({ prompt: "bench", config: { simulate: { steps: 1, step_ms: 0 } } });
/** A load of submits of `body`: at most OBJECTS_PER_LOAD of them. */
export const submitLoad = (body: string): LoadOptions => ({ method: "POST", path: "/api/v1/runs", headers: json, body, maxOverallRequests: OBJECTS_PER_LOAD });
/** A submit of quick jobs, which run meanwhile on the same server. */
export const quickSubmit = submitLoad(quickJob);
/** The submit of a quick job not due while a load run of `seconds` lasts: the submit is measured alone. */
export const laterSubmitFor = (seconds: number): LoadOptions =>
  submitLoad(JSON.stringify({ prompt: "bench", delay_seconds: seconds + 5, config: { simulate: { steps: 1, step_ms: 0 } } }));
export const laterSubmit = laterSubmitFor(SECONDS);
/** The floor's submit, whose jobs never run. */
export const floorSubmit: LoadOptions = quickSubmit;
/**
 * The floor of this design: a submit must ask the tenant's line for a place (refused past the
 * queued limit, storing nothing) and enter the job in the tenant's list (where an idempotency key
 * is held), two calls on objects that already exist around the job's creation.
 */
export const designFloorSubmit: LoadOptions = { ...floorSubmit, path: "/api/v1/runs?tenant_calls=2" };

export async function submit(body: Record<string, unknown>, base = BASE): Promise<string> {
  const res = await fetch(`${base}/api/v1/runs`, { method: "POST", headers: json, body: JSON.stringify(body) });
  return ((await res.json()) as { job_id: string }).job_id;
}

export async function finished(id: string, base = BASE): Promise<Record<string, unknown>> {
  for (;;) {
    const job = (await (await fetch(`${base}/api/v1/runs/${id}`)).json()) as Record<string, unknown>;
    if (job.retry_after === null) return job;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The status read of a job that has finished, so that no run of its own competes for the server. */
export async function finishedJobRead(base = BASE): Promise<LoadOptions> {
  const id = await submit({ prompt: "status", config: { simulate: { steps: 1, step_ms: 0 } } }, base);
  await finished(id, base);
  return { path: `/api/v1/runs/${id}` };
}

/** Status reads of a finished job, and of a job on the floor. */
export async function statusReads(): Promise<{ ours: LoadOptions; floor: LoadOptions }> {
  const ours = await finishedJobRead();
  const res = await fetch(`${floor.base}/api/v1/runs`, { method: "POST", headers: json, body: quickJob });
  const floorId = ((await res.json()) as { job_id: string }).job_id;
  return { ours, floor: { path: `/api/v1/runs/${floorId}` } };
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const ms = (x: number) => `${x.toFixed(1)} ms`;
export const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

/**
 * Waits until no job of the tenant is queued or running, and then until the server is quiet:
 * objects that have just gone idle are closed some seconds later, and closing writes their
 * databases back, which would otherwise land in the next figure.
 */
export async function idle(target = server) {
  if (!LIST_ONLY) await noJobRunning(target.base);
  await quiet(60_000, target);
}

async function noJobRunning(base: string) {
  for (;;) {
    // A server working through a long line can be slow to answer, or answer that an object is
    // overloaded: ask again.
    const stats = await fetch(`${base}/stats`, { signal: AbortSignal.timeout(60_000) })
      .then((res) => (res.ok ? (res.json() as Promise<{ by_status: Record<string, number> }>) : null))
      .catch(() => null);
    if (stats && stats.by_status.queued + stats.by_status.running === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Waits until the server is quiet: it uses almost no CPU, and has closed the objects earlier
 * loads made. A server falls quiet for a few seconds after a load before it closes them, and
 * closing a thousand objects then takes it several seconds more, at a few per cent of a core.
 */
export async function quiet(maxMs = 60_000, target = server) {
  const pid = target.process.pid!;
  const resting = restingFiles.get(target);
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const before = treeCpuMs(pid);
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS));
    const calm = treeCpuMs(pid) - before <= QUIET_WINDOW_MS * QUIET_CPU_SHARE;
    if (calm && (resting === undefined || treeOpenFiles(pid) <= resting + QUIET_OPEN_FILES)) return;
  }
}

/**
 * Submits `count` jobs (the body of the n-th from `bodyOf(n)`, n from `from` up) in loads of at
 * most OBJECTS_PER_LOAD, each once the server holds few of the objects made before it open: under
 * the wall above, however many are seeded. A submit that failed is named, as every load's
 * failures are, and made up for in the next load, so that the server holds `count` more jobs.
 */
export async function seedJobs(count: number, bodyOf: (n: number) => string, from = 0, target = server): Promise<void> {
  let made = 0;
  let n = from;
  while (made < count) {
    await fewObjectsOpen(SEEDING_OPEN_OBJECTS, target);
    const amount = Math.min(count - made, OBJECTS_PER_LOAD);
    const body = (req: autocannon.Request) => ({ ...req, body: bodyOf(n++) });
    const options: LoadOptions = { method: "POST", path: "/api/v1/runs", headers: json, connections: Math.min(32, amount), amount, requests: [{ setupRequest: body }] };
    const run = await load(options, target);
    if (run["2xx"] === 0) throw new Error(`seeding: no submit of ${amount} to ${target.base} was served`);
    made += run["2xx"];
  }
}

/** The objects a server may hold open, beyond those it held at rest, when a seeding load starts. */
const SEEDING_OPEN_OBJECTS = 250;
/** An open object holds three files: its database, its write-ahead log and their shared memory. */
const FILES_PER_OBJECT = 3;

/** Waits (at most five minutes) until the server holds at most `objects` objects open beyond those it held at rest. */
async function fewObjectsOpen(objects: number, target: DevServer): Promise<void> {
  // A server the bench did not start with (the shards' own) is first seen here, at rest.
  if (!restingFiles.has(target)) restingFiles.set(target, treeOpenFiles(target.process.pid!));
  const limit = restingFiles.get(target)! + objects * FILES_PER_OBJECT;
  const deadline = Date.now() + 300_000;
  while (treeOpenFiles(target.process.pid!) > limit && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
}

export async function cpuOver(windowMs: number): Promise<number> {
  const before = treeCpuMs(server.process.pid!);
  await new Promise((r) => setTimeout(r, windowMs));
  return treeCpuMs(server.process.pid!) - before;
}
