/**
 * `npm run bench:pages -- [count]`: the SQLite pages a submit, and a whole job, write: counted, not
 * timed. Each page a commit changes goes into its database's write-ahead log as one frame (a
 * header and the page, written apart), so a b-tree more in a schema, or a row more in a commit,
 * shows as a page more, where a rate moves by a tenth from one round to the next. It starts the
 * service and the floor on fresh states and takes three counts, each over `count` (200 by default)
 * one at a time, after a few to warm up (the tenant's objects are made, and make their tables, on
 * the first): the service's submit (its job not due for an hour), the floor of this design's
 * submit, and the service's 3-step job from its submit to its end. Meanwhile `strace` logs the
 * writes and reads of the workerd process that runs the Worker and its objects. It prints, per
 * one, the pages written to write-ahead logs by the kind of object (its class, and whether that
 * submit made it; or miniflare's own stores), and the `pwrite64` and `pread64` calls in all.
 * Needs `strace` (Debian: strace); state in memory or on disk as for `npm run bench` (BENCH_MEMORY=1).
 */
import { spawn, spawnSync } from "node:child_process";
import { createReadStream, readFileSync, readdirSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { startServer, stopServer, type DevServer } from "../test/e2e/server";
import { startFloor } from "./floor";
import { json } from "./measure";
import { releaseStateDirs, stateDir } from "./state";
import { workerdOf } from "./workerd";

/** Submits made before counting: the tenant's objects are made, and make their tables, on the first. */
const WARM_UP = 5;
/** Long enough for what an answer leaves to be written (an outbox drained by the alarm) to be written. */
const SETTLE_MS = 2000;

/** One line of `strace -y`: the call, the file its descriptor names, the bytes done. */
const CALL = /^(?:\d+\s+)?(pwrite64|pread64)\(\d+<([^>]*)>, .*, \d+, \d+\)\s+=\s+(-?\d+)/;
/** A WAL frame is a 24-byte header and a page, written apart; a log's own header is 32 bytes. */
const LEAST_PAGE_BYTES = 512;

interface Counted {
  /** Pages written to write-ahead logs, by the kind of object whose log it is. */
  pages: Map<string, number>;
  writes: number;
  reads: number;
}

/** Every SQLite file under a state directory: what existed before the counted submits. */
function databases(dir: string): Set<string> {
  const found = new Set<string>();
  const walk = (at: string) => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".sqlite")) found.add(path);
    }
  };
  walk(dir);
  return found;
}

/**
 * Whose a file is: an object's, by its class (as miniflare names the folder) and whether it
 * existed before the count; the database where the objects of a class keep their alarms; or
 * another store of the dev server's (the local R2).
 */
function kindOf(path: string, persistTo: string, existed: Set<string>): string {
  const database = path.replace(/-(wal|shm|journal)$/, "");
  const [store, folder, file] = relative(persistTo, database).split("/").slice(1);
  if (store !== "do") return `the local ${store.toUpperCase()}`;
  const className = folder.slice(folder.lastIndexOf("-") + 1);
  if (file === "metadata.sqlite") return `the alarms of ${className} objects`;
  return existed.has(database) ? className : `${className}, made by the submit`;
}

/** True once a tracer (strace) is attached to the process. */
const traced = (pid: number) => !/^TracerPid:\s+0$/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));

/** A submit answered 202, or an error. */
async function submitted(server: DevServer, path: string, body: string): Promise<string> {
  const res = await fetch(`${server.base}${path}`, { method: "POST", headers: json, body });
  if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { job_id: string }).job_id;
}

/** Polls a job of the service until it has ended. */
async function ended(server: DevServer, id: string): Promise<void> {
  for (;;) {
    const job = (await (await fetch(`${server.base}/api/v1/runs/${id}`)).json()) as { retry_after: number | null };
    if (job.retry_after === null) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `count` times `work`, one at a time, while strace logs the runtime's writes and reads. */
async function counted(server: DevServer, work: () => Promise<unknown>, count: number): Promise<Counted> {
  for (let i = 0; i < WARM_UP; i++) await work();
  // What the warm-up left to be written (a job's outbox, after its end) is written first.
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const existed = databases(server.persistTo);
  const file = `/tmp/bench-pages-${process.pid}-${server.base.split(":").pop()}.strace`;
  const runtime = workerdOf(server).runtime;
  const strace = spawn("strace", ["-f", "-qq", "-y", "-e", "trace=pwrite64,pread64", "-o", file, "-p", String(runtime)], { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => strace.on("exit", () => resolve()));
  while (!traced(runtime)) await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < count; i++) await work();
  // What the last answers left to be written (a commit after an answer, an outbox) is written meanwhile.
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  strace.kill("SIGINT");
  await exited;
  const result: Counted = { pages: new Map(), writes: 0, reads: 0 };
  for await (const line of createInterface({ input: createReadStream(file) })) {
    const call = CALL.exec(line);
    if (!call) continue;
    const [, name, path, done] = call;
    if (name === "pread64") {
      result.reads++;
      continue;
    }
    result.writes++;
    if (path.endsWith("-wal") && Number(done) >= LEAST_PAGE_BYTES) {
      const kind = kindOf(path, server.persistTo, existed);
      result.pages.set(kind, (result.pages.get(kind) ?? 0) + 1);
    }
  }
  rmSync(file, { force: true });
  return result;
}

function print(count: number, sides: [string, Counted][]) {
  const per = (n: number) => (n / count).toFixed(2).padStart(8);
  for (const [side, c] of sides) {
    const all = [...c.pages.values()].reduce((a, b) => a + b, 0);
    console.log(`\n${side}, per one, over ${count} one at a time after ${WARM_UP} on a fresh state:`);
    for (const [kind, n] of [...c.pages].sort((a, b) => b[1] - a[1])) console.log(`${per(n)}  pages to the write-ahead log: ${kind}`);
    console.log(`${per(all)}  pages in all`);
    console.log(`${per(c.writes)}  pwrite64 calls`);
    console.log(`${per(c.reads)}  pread64 calls`);
  }
}

async function main() {
  if (spawnSync("strace", ["-V"]).status !== 0) {
    console.error("bench:pages needs strace (Debian: apt-get install strace)");
    process.exit(2);
  }
  const count = Number(process.argv[2] ?? 200);
  const service = await startServer(stateDir("pages"), ["--var", "MAX_QUEUED_PER_TENANT:1000000"]);
  const floor = await startFloor(stateDir("pages-floor"), ["--inspector-port", "9239"]);
  try {
    const later = JSON.stringify({ prompt: "bench", delay_seconds: 3600, config: { simulate: { steps: 1, step_ms: 0 } } });
    const quick = JSON.stringify({ prompt: "bench", config: { simulate: { steps: 3, step_ms: 0 } } });
    const ours = await counted(service, () => submitted(service, "/api/v1/runs", later), count);
    const design = await counted(floor, () => submitted(floor, "/api/v1/runs?tenant_calls=2", JSON.stringify({ prompt: "bench" })), count);
    const whole = await counted(service, async () => ended(service, await submitted(service, "/api/v1/runs", quick)), count);
    print(count, [
      ["our submit (its job not yet due)", ours],
      ["the floor of this design's submit", design],
      ["our 3-step job, from its submit to its end", whole],
    ]);
  } finally {
    await Promise.all([stopServer(service), stopServer(floor)]);
    releaseStateDirs();
  }
}

await main();
