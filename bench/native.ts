/**
 * `npm run bench:native -- [submit|status] [rounds] [seconds]`: where workerd's CPU goes, below
 * JavaScript. The service's submit (its job not yet due) and the floor of this design's (the
 * floor's submit with its two small calls on the tenant's objects), or the service's status read
 * of a finished job and the floor's, take turns, in rounds, each load sampled by `perf record` on
 * the workerd process that runs the Worker and its objects, and on the proxy in front of it.
 * workerd ships with its symbols, so each sample of the first says where it was (in a call into
 * an object, in an object starting, or in the rest: the Worker, commits, the event loop) and what
 * it did (SQLite making tables, preparing, running or committing statements; opening a database;
 * JS; garbage collection; RPC serialisation); the proxy's are counted in all. Each process's CPU
 * is also read from /proc (the Worker's workerd, the proxy, wrangler with the rest), so that a
 * difference can be placed in one of them. Each is printed in ms of CPU per request, for both
 * sides round by round, with the median of the service's excess.
 * A V8 profile (`bench:profile`) counts time spent inside a call into workerd to the JS function
 * that made it; this splits that time. Needs Linux `perf` (Debian: linux-perf); with the servers'
 * state where `npm run bench` keeps it (BENCH_MEMORY=1: in memory).
 */
import { spawn, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createInterface } from "node:readline";
import { treeCpuMs } from "../test/e2e/procfs";
import { startServer, stopServer, type DevServer } from "../test/e2e/server";
import { startFloor } from "./floor";
import { bothQuiet, designFloorSubmit, inTurns, laterSubmitFor, load, LOAD_NAMES, median, statusReads, useServers, type LoadOptions } from "./measure";
import { releaseStateDirs, stateDir } from "./state";
import { workerdOf } from "./workerd";

const SAMPLES_PER_SECOND = 999;

/** Where a sample was: the first of these its stack passes through (innermost frames first). */
const PLACES: [string, RegExp][] = [
  ["a call into an object", /JsRpcTargetBase::callImpl/],
  ["an object starting", /ActorContainer::start/],
  ["the rest", /./],
];

/** What a sample did: the first of these its stack matches. */
const KINDS: [string, RegExp][] = [
  // SQLite's unix VFS looks for each file it opens among all the files the process holds open.
  ["opening a database", /unixOpen|sqlite3BtreeOpen|openDatabase/],
  ["SQL: making tables", /sqlite3StartTable|sqlite3EndTable|sqlite3NestedParse|sqlite3InitCallback|sqlite3BtreeCreateTable|sqlite3AddColumn|sqlite3CreateIndex/],
  ["SQL: commit", /sqlite3VdbeHalt|sqlite3PagerCommit|walFrames|ActorSqlite::commit/],
  ["SQL: prepare", /sqlite3LockAndPrepare|sqlite3Prepare/],
  ["SQL: run", /sqlite3_step|sqlite3VdbeExec/],
  ["RPC serialisation", /ValueSerializer|ValueDeserializer/],
  ["garbage collection", /Heap::|Scavenge|MarkCompact|ConcurrentMark|GlobalHandles|HeapTracer/],
  ["JS", /Builtins_|\[unknown\]|Interpreter|JsonStringify|JsonParse/],
  ["workerd: event loop, promises, memory", /./],
];

type Tally = Map<string, number>;
const ALL = "all";
const PROXY = "the dev server's proxy in front (another workerd), all";
/**
 * The dev server's CPU by process, read from /proc rather than sampled: every thread counted,
 * the sampling's own cost included, so these are a little above what perf counts.
 */
const BY_PROCESS: [string, (cpu: ProcessCpu) => number][] = [
  ["/proc: the whole dev server", (cpu) => cpu.all],
  ["/proc: the workerd that runs the Worker and its objects", (cpu) => cpu.runtime],
  ["/proc: the proxy in front", (cpu) => cpu.proxy],
  ["/proc: wrangler (node) and the rest", (cpu) => cpu.all - cpu.runtime - cpu.proxy],
];
interface ProcessCpu {
  all: number;
  runtime: number;
  proxy: number;
}

/**
 * perf samples a process into `file` until `stop` is called: for as long as a load lasts, which
 * for a submit may be less than its seconds (OBJECTS_PER_LOAD in bench/measure.ts).
 */
function record(pid: number, file: string): { stop: () => Promise<void> } {
  const perf = spawn("perf", ["record", "-e", "cpu-clock", "-F", String(SAMPLES_PER_SECOND), "-g", "-p", String(pid), "-o", file], { stdio: "ignore" });
  const exited = new Promise<void>((resolve, reject) =>
    perf.on("exit", (code, signal) => (code === 0 || signal === "SIGINT" ? resolve() : reject(new Error(`perf record exited ${code ?? signal}`)))),
  );
  return {
    stop: () => {
      // perf writes its file out on SIGINT and exits 0.
      perf.kill("SIGINT");
      return exited;
    },
  };
}

/**
 * One load on one server while perf samples both its workerd processes: requests a second, and ms
 * of CPU per request, the runtime's by place and kind, the proxy's in all.
 */
async function sampled(server: DevServer, options: LoadOptions, seconds: number, file: string) {
  const { runtime, proxy } = workerdOf(server);
  const cpu = (): ProcessCpu => ({ all: treeCpuMs(server.process.pid!), runtime: treeCpuMs(runtime), proxy: treeCpuMs(proxy) });
  const recordings = [record(runtime, file), record(proxy, `${file}.proxy`)];
  const before = cpu();
  const result = await load({ ...options, duration: seconds }, server);
  const after = cpu();
  await Promise.all(recordings.map((r) => r.stop()));
  const tally = await tallied(file);
  tally.set(PROXY, (await tallied(`${file}.proxy`)).get(ALL) ?? 0);
  for (const made of [file, `${file}.proxy`]) rmSync(made, { force: true });
  const served = Math.max(1, result["2xx"]);
  const perRequest = (samples: number) => (1000 * samples) / SAMPLES_PER_SECOND / served;
  const ms = new Map([...tally].map(([key, n]) => [key, perRequest(n)]));
  for (const [name, of] of BY_PROCESS) ms.set(name, (of(after) - of(before)) / served);
  return { rps: result.rate, ms };
}

/** Every sample of a recording, counted by "place / kind" (and by place, and in all). */
async function tallied(file: string): Promise<Tally> {
  const script = spawn("perf", ["script", "-i", file, "-F", "ip,sym"], { stdio: ["ignore", "pipe", "ignore"] });
  const tally: Tally = new Map();
  const add = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);
  let stack: string[] = [];
  const count = () => {
    if (stack.length === 0) return;
    const text = stack.join("\n");
    const place = PLACES.find(([, pattern]) => pattern.test(text))![0];
    const kind = KINDS.find(([, pattern]) => pattern.test(text))![0];
    add(ALL);
    add(place);
    add(`${place} / ${kind}`);
    stack = [];
  };
  for await (const line of createInterface({ input: script.stdout })) {
    if (line.trim() === "") count();
    else stack.push(line.trim());
  }
  count();
  return tally;
}

async function main() {
  if (spawnSync("perf", ["--version"]).status !== 0) {
    console.error("bench:native needs Linux perf (Debian: apt-get install linux-perf)");
    process.exit(2);
  }
  const [figure = "submit", rounds = "3", seconds = "10"] = process.argv.slice(2);
  if (figure !== "submit" && figure !== "status") throw new Error(`unknown figure ${figure}: submit or status`);
  const service = await startServer(stateDir("native"), ["--var", "MAX_QUEUED_PER_TENANT:1000000"]);
  const floor = await startFloor(stateDir("native-floor"), ["--inspector-port", "9239"]);
  useServers(service, floor);
  try {
    const { ours, theirs, against } =
      figure === "submit"
        ? { ours: laterSubmitFor(Number(seconds)), theirs: designFloorSubmit, against: LOAD_NAMES.design }
        : await statusReads().then((reads) => ({ ours: reads.ours, theirs: reads.floor, against: LOAD_NAMES.plain }));
    const take = (name: string, server: DevServer, options: LoadOptions) => () => sampled(server, options, Number(seconds), `/tmp/bench-native-${process.pid}-${name}.data`);
    const taken = (await inTurns(Number(rounds), [["ours", take("ours", service, ours)], ["theirs", take("theirs", floor, theirs)]], bothQuiet, (round, n) =>
      console.error(`  round ${n + 1}: ours ${round.ours!.rps.toFixed(0)} req/s, ${against} ${round.theirs!.rps.toFixed(0)} req/s`),
    )) as { ours: Sampled; theirs: Sampled }[];
    print(figure, against, taken.map((r) => r.ours), taken.map((r) => r.theirs));
  } finally {
    await Promise.all([stopServer(service), stopServer(floor)]);
    releaseStateDirs();
  }
}

type Sampled = Awaited<ReturnType<typeof sampled>>;

function print(figure: string, against: string, ours: Sampled[], theirs: Sampled[]) {
  const f = (x: number) => x.toFixed(3).padStart(6);
  const rates = ours.map((o, i) => (o.rps / theirs[i].rps).toFixed(2));
  console.log(`${figure} vs ${against}: ${rates.join(", ")} (req/s, round by round)`);
  console.log(`ms of workerd's CPU per request: ours (each round) | ${against} (each round) | ours beyond it (median)`);
  const keys = [ALL, ...PLACES.flatMap(([place]) => [place, ...KINDS.map(([kind]) => `${place} / ${kind}`)]), PROXY, ...BY_PROCESS.map(([name]) => name)];
  for (const key of keys) {
    const a = ours.map((r) => r.ms.get(key) ?? 0);
    const b = theirs.map((r) => r.ms.get(key) ?? 0);
    if (Math.max(...a, ...b) < 0.01) continue;
    const excess = median(a.map((x, i) => x - b[i]));
    console.log(`${key.padEnd(60)} ${a.map(f).join(" ")} | ${b.map(f).join(" ")} | ${excess >= 0 ? "+" : ""}${excess.toFixed(3)}`);
  }
}

await main();
