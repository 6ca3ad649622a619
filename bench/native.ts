/**
 * `npm run bench:native -- [rounds] [seconds]`: where workerd's CPU goes under submits, below
 * JavaScript. The service's submit (its job not yet due) and the floor of this design's (the
 * floor's submit with its two small calls on the tenant's objects) take turns, in rounds, each
 * load sampled by `perf record` on the workerd process that runs the Worker and its objects.
 * workerd ships with its symbols, so each sample says where it was (in a call into an object, in
 * an object starting, or in the rest: the Worker, commits, the event loop) and what it did
 * (SQLite making tables, preparing, running or committing statements; opening a database; JS;
 * garbage collection; RPC serialisation). Each is printed in ms of CPU per request, for both sides
 * round by round, and the median of the service's excess. A V8 profile (`bench:profile`) counts
 * time spent inside a call into workerd to the JS function that made it; this splits that time.
 * Needs Linux `perf` (Debian: linux-perf); on loopback, with the servers' state as `npm run bench`
 * keeps it (BENCH_MEMORY=1: in memory).
 */
import autocannon from "autocannon";
import { spawn, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createInterface } from "node:readline";
import { treeProcesses } from "../test/e2e/procfs";
import { startServer, stopServer, type DevServer } from "../test/e2e/server";
import { startFloor } from "./floor";
import { laterSubmit, json, median, quickJob, quiet, useServers, type LoadOptions } from "./measure";
import { releaseStateDirs, stateDir } from "./state";

const SAMPLES_PER_SECOND = 999;

/** Where a sample was: the first of these its stack passes through (innermost frames first). */
const PLACES: [string, RegExp][] = [
  ["a call into an object", /JsRpcTargetBase::callImpl/],
  ["an object starting", /ActorContainer::start/],
  ["the rest", /./],
];

/** What a sample did: the first of these its stack matches. */
const KINDS: [string, RegExp][] = [
  // SQLite's unix VFS looks for the file among every database the process holds open.
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

/** The workerd process that runs a dev server's Worker and objects (the other serves its proxy). */
function runtimeOf(server: DevServer): number {
  const runtime = treeProcesses(server.process.pid!).find((p) => p.comm === "workerd" && p.cmdline.includes("--inspect"));
  if (!runtime) throw new Error("no workerd process with an inspector under the dev server");
  return runtime.pid;
}

/** One load on one server while perf samples its runtime: requests a second, and ms of CPU per request by place and kind. */
async function sampled(server: DevServer, options: LoadOptions, seconds: number, file: string) {
  const perf = spawn("perf", ["record", "-e", "cpu-clock", "-F", String(SAMPLES_PER_SECOND), "-g", "-p", String(runtimeOf(server)), "-o", file, "--", "sleep", String(seconds)], {
    stdio: "ignore",
  });
  const recorded = new Promise<void>((resolve, reject) => perf.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`perf record exited ${code}`)))));
  const { path = "/", ...rest } = options;
  const result = await autocannon({ url: `${server.base}${path}`, connections: 16, duration: seconds, ...rest });
  await recorded;
  const tally = await tallied(file);
  rmSync(file, { force: true });
  const perRequest = (samples: number) => (1000 * samples) / SAMPLES_PER_SECOND / Math.max(1, result.requests.total);
  return { rps: result.requests.average, ms: new Map([...tally].map(([key, n]) => [key, perRequest(n)])) };
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
  const rounds = Number(process.argv[2] ?? 3);
  const seconds = Number(process.argv[3] ?? 10);
  const service = await startServer(stateDir("native"), ["--var", "MAX_QUEUED_PER_TENANT:1000000"]);
  const floor = await startFloor(stateDir("native-floor"), ["--inspector-port", "9239"]);
  useServers(service, floor);
  const sides = {
    ours: { server: service, options: laterSubmit },
    design: { server: floor, options: { method: "POST", path: "/api/v1/runs?tenant_calls=2", headers: json, body: quickJob } as LoadOptions },
  };
  const taken: Record<keyof typeof sides, { rps: number; ms: Map<string, number> }[]> = { ours: [], design: [] };
  try {
    for (let n = 0; n < rounds; n++) {
      const order = (n % 2 === 0 ? ["ours", "design"] : ["design", "ours"]) as (keyof typeof sides)[];
      for (const name of order) {
        await quiet(60_000, service);
        await quiet(60_000, floor);
        const { server, options } = sides[name];
        taken[name].push(await sampled(server, options, seconds, `/tmp/bench-native-${process.pid}-${name}.data`));
      }
      console.error(`  round ${n + 1}: ours ${taken.ours[n].rps.toFixed(0)} req/s, the floor of this design ${taken.design[n].rps.toFixed(0)} req/s`);
    }
  } finally {
    await Promise.all([stopServer(service), stopServer(floor)]);
    releaseStateDirs();
  }
  print(taken.ours, taken.design);
}

function print(ours: { rps: number; ms: Map<string, number> }[], design: { rps: number; ms: Map<string, number> }[]) {
  const f = (x: number) => x.toFixed(3).padStart(6);
  const rates = ours.map((o, i) => (o.rps / design[i].rps).toFixed(2));
  console.log(`submit, its job not yet due, vs the floor of this design: ${rates.join(", ")} (req/s, round by round)`);
  console.log(`ms of workerd's CPU per request: ours (each round) | the floor of this design (each round) | ours beyond it (median)`);
  const keys = [ALL, ...PLACES.flatMap(([place]) => [place, ...KINDS.map(([kind]) => `${place} / ${kind}`)])];
  for (const key of keys) {
    const a = ours.map((r) => r.ms.get(key) ?? 0);
    const b = design.map((r) => r.ms.get(key) ?? 0);
    if (Math.max(...a, ...b) < 0.01) continue;
    const excess = median(a.map((x, i) => x - b[i]));
    console.log(`${key.padEnd(60)} ${a.map(f).join(" ")} | ${b.map(f).join(" ")} | ${excess >= 0 ? "+" : ""}${excess.toFixed(3)}`);
  }
}

await main();
