/**
 * `npm run bench:soak`: jobs submitted, run to their end and deleted through the API at a steady
 * rate on `wrangler dev` (SOAK_JOBS, 20,000 by default; 100,000 on request; SOAK_RATE jobs a
 * second), then what is left once the server is stopped (R2 objects, job objects with tables,
 * projection rows, idempotency keys, places in line: every one must be 0; the projection's
 * tombstones of deleted jobs are counted too, and go a day after each delete), and the dev server's
 * memory before, along the way, after, and after a minute idle. The floor of the design
 * (bench/floor/: create an object with a row and an alarm, read it, delete it) goes through the
 * same number of jobs at the same rate in the same run, so that memory growth can be told apart:
 * what workerd keeps for every object it has seen, and what is ours. The JS heap of the isolate
 * that runs the Worker and its objects (read through the inspector) says how much of it is
 * JavaScript.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { treeRss } from "../test/e2e/procfs";
import { startFloor } from "./floor";
import { inspector } from "./inspector";
import { startServer, stopServer, type DevServer } from "../test/e2e/server";

const JOBS = Number(process.env.SOAK_JOBS ?? 20_000);
const RATE = Number(process.env.SOAK_RATE ?? 40);
const IDLE_MS = Number(process.env.SOAK_IDLE_MS ?? 60_000);
const MAX_IN_FLIGHT = 200;
/**
 * How often a job's status is polled. Faster polling of many jobs at once saturates the dev
 * server, whose proxy then drops requests in flight ("Your worker restarted mid-request"): a limit
 * of wrangler dev, not of the service.
 */
const POLL_MS = 500;
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB`;
const INSPECTOR_PORTS = { service: 9240, floor: 9239 };

/**
 * A request through the dev server, sent again when its proxy dropped it ("Your worker restarted
 * mid-request": it does so under load, see POLL_MS). Submits carry an idempotency key and deletes
 * are answered 404 once done, so a repeat is safe.
 */
async function send(url: string, init?: RequestInit): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(url, init);
    if (res.status !== 503 || attempt === 5) return res;
    const text = await res.clone().text();
    if (!text.includes("restarted mid-request")) return res;
    dropped++;
    await sleep(200);
  }
}
let dropped = 0;

/** The JS heap in use in the isolate that runs the Worker and its objects (workerd answers no request for a collection first). */
async function jsHeap(port: number): Promise<number> {
  const session = await inspector(port);
  try {
    const usage = session.send<{ usedSize: number }>("Runtime.getHeapUsage");
    const timeout = sleep(60_000).then(() => ({ usedSize: Number.NaN }));
    return (await Promise.race([usage, timeout])).usedSize;
  } finally {
    session.close();
  }
}

/** One job's life through the API: submit, poll to its end, delete. */
async function serviceJob(base: string, i: number): Promise<void> {
  const res = await send(`${base}/api/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": `soak-${i}` },
    body: JSON.stringify({ prompt: `soak ${i}`, config: { simulate: { steps: 1, step_ms: 1, output_bytes: 2048 } } }),
  });
  if (res.status !== 202) throw new Error(`submit ${i}: ${res.status} ${await res.text()}`);
  const { job_id } = (await res.json()) as { job_id: string };
  for (;;) {
    const { status } = (await (await fetch(`${base}/api/v1/runs/${job_id}`)).json()) as { status: string };
    if (status === "succeeded" || status === "failed" || status === "cancelled") break;
    await sleep(POLL_MS);
  }
  const deleted = await send(`${base}/api/v1/runs/${job_id}`, { method: "DELETE" });
  if (deleted.status !== 204 && deleted.status !== 404) throw new Error(`delete ${job_id}: ${deleted.status} ${await deleted.text()}`);
}

/** The floor's least: create the job's object (a row and an alarm), read it, delete it. */
async function floorJob(base: string): Promise<void> {
  const { job_id } = (await (await fetch(`${base}/api/v1/runs`, { method: "POST", body: "{}" })).json()) as { job_id: string };
  await (await fetch(`${base}/api/v1/runs/${job_id}`)).json();
  await fetch(`${base}/api/v1/runs/${job_id}`, { method: "DELETE" });
}

interface Soak {
  seconds: number;
  rss: { before: number; along: number[]; after: number; idle: number };
  heap: { before: number; idle: number };
  failures: number;
}

/** Starts a job every 1/RATE s (never more than MAX_IN_FLIGHT unfinished), sampling memory every tenth. */
async function soak(server: DevServer, port: number, job: (i: number) => Promise<void>): Promise<Soak> {
  const pid = server.process.pid!;
  const heapBefore = await jsHeap(port);
  const before = treeRss(pid);
  const along: number[] = [];
  const started = Date.now();
  let inFlight = 0;
  let failures = 0;
  const all: Promise<void>[] = [];
  for (let i = 0; i < JOBS; i++) {
    const due = started + (i * 1000) / RATE;
    if (due > Date.now()) await sleep(due - Date.now());
    while (inFlight >= MAX_IN_FLIGHT) await sleep(10);
    inFlight++;
    all.push(
      job(i)
        .catch((error) => {
          failures++;
          if (failures <= 5) console.error(String(error));
        })
        .finally(() => inFlight--),
    );
    if ((i + 1) % Math.ceil(JOBS / 10) === 0) along.push(treeRss(pid));
  }
  await Promise.all(all);
  const seconds = (Date.now() - started) / 1000;
  const after = treeRss(pid);
  await sleep(IDLE_MS);
  return { seconds, rss: { before, along, after, idle: treeRss(pid) }, heap: { before: heapBefore, idle: await jsHeap(port) }, failures };
}

function report(name: string, result: Soak) {
  const { rss } = result;
  console.log(`${name}: ${JOBS} jobs in ${result.seconds.toFixed(0)} s (${(JOBS / result.seconds).toFixed(1)} jobs/s), ${result.failures} failed`);
  console.log(`  memory: before ${mib(rss.before)}, after ${mib(rss.after)}, after ${IDLE_MS / 1000} s idle ${mib(rss.idle)}`);
  console.log(`  along the way (every ${JOBS / 10} jobs): ${rss.along.map(mib).join(", ")}`);
  const heap = (bytes: number) => (Number.isNaN(bytes) ? "not answered within 60 s" : mib(bytes));
  console.log(`  the isolate's JS heap in use: before ${heap(result.heap.before)}, after idle ${heap(result.heap.idle)}`);
}

async function main() {
  console.error(`soak: ${JOBS} jobs at ${RATE}/s, then ${IDLE_MS / 1000} s idle; the service, then the floor`);
  const service = await startServer(mkdtempSync(join(tmpdir(), "runs-soak-")), ["--inspector-port", String(INSPECTOR_PORTS.service)]);
  let serviceResult: Soak;
  try {
    serviceResult = await soak(service, INSPECTOR_PORTS.service, (i) => serviceJob(service.base, i));
  } finally {
    await stopServer(service);
  }
  const left = JSON.parse(execFileSync("python3", [join(import.meta.dirname, "leftovers.py"), service.persistTo]).toString()) as Record<string, number>;

  const floor = await startFloor(mkdtempSync(join(tmpdir(), "runs-soak-floor-")), ["--inspector-port", String(INSPECTOR_PORTS.floor)]);
  let floorResult: Soak;
  try {
    floorResult = await soak(floor, INSPECTOR_PORTS.floor, () => floorJob(floor.base));
  } finally {
    await stopServer(floor);
  }

  report("service", serviceResult);
  console.log(`  left behind: ${Object.entries(left).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  report("floor of the design", floorResult);
  const growth = (r: Soak) => r.rss.idle - r.rss.before;
  console.log(`growth after idle: service ${mib(growth(serviceResult))}, floor ${mib(growth(floorResult))}`);
  console.log(`requests the dev server's proxy dropped and the bench sent again: ${dropped}`);
  // Tombstones stay a day by design (TOMBSTONE_TTL_MS); the count of objects seen is for scale.
  const leftover = Object.entries(left).filter(([k, v]) => k !== "job_objects_seen" && k !== "tombstones" && v !== 0);
  if (leftover.length > 0 || serviceResult.failures > 0) process.exitCode = 1;
}

await main();
