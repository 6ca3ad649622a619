/**
 * A job's figures from submit to delete: throughput against the bare route and the floor, delete
 * with and without a large output, streams to many watchers, cancel (also while a webhook
 * receiver stalls), the CPU of a long line that waits, and memory while streaming an output.
 */
import { createServer } from "node:http";
import { peakRssDuring, treeRss } from "../test/e2e/procfs";
import { BASE } from "../test/e2e/server";
import {
  againstBare,
  againstFloor,
  cpuOver,
  describeRun,
  designFloorSubmit,
  finished,
  floor,
  floorSubmit,
  idle,
  jobPath,
  json,
  laterSubmit,
  load,
  median,
  ms,
  pct,
  quickJob,
  quickSubmit,
  quiet,
  report,
  seedJobs,
  server,
  statusReads,
  submit,
  type Context,
} from "./measure";

/** A local webhook receiver that never answers, for cancel latency while a receiver stalls. */
const STALL_PORT = 8007;
// How many jobs wait in line for the idle-CPU figure (100,000 on request: seeding runs at the submit rate).
const LINE_SIZE = Number(process.env.BENCH_LINE_SIZE ?? 5000);
const MiB = 1024 * 1024;

export async function throughput() {
  // The quick jobs submitted here run meanwhile on the same server, as they would in use.
  await againstBare("submit", "", quickSubmit);
  // Against the floor, whose jobs never run, the submit alone: its jobs may start only once the
  // run is over (then they run, and the next round waits for them).
  await againstFloor("submit, its job not yet due", " (target ≥ 0.8)", laterSubmit, floorSubmit, {
    name: "a submit with its two tenant calls",
    options: designFloorSubmit,
  });

  // Polling a job that has finished: the read alone.
  const reads = await statusReads();
  await againstFloor("status", " (target ≥ 0.95)", reads.ours, reads.floor);

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
  report("one object, calls of one small write", `${(one.rate * calls).toFixed(0)} calls/s`, `${calls} calls per request on the floor Worker; a tenant's line and projection each take 2 calls per job`);
  report("submit + cancel + delete cycles", `${(cycle.rate / 3).toFixed(0)} cycles/s`, "three requests each");
}

export async function deletes() {
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

export async function watchers(count: number) {
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

export async function cancelLatency() {
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
export async function cancelWithStalledReceiver() {
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
 * runs for hours, and LINE_SIZE jobs wait behind them. Set against the same server with its slots
 * so held and no job waiting, and with nothing running.
 */
export async function idleLine() {
  await quiet();
  const empty = await cpuSeries(3);
  const emptySubmit = await load(laterSubmit);
  // Each holder runs for hours (its most steps, each its longest), so that no slot frees while the
  // line is seeded and measured: 100,000 jobs take over half an hour to seed.
  const holders = await Promise.all(Array.from({ length: 10 }, () => submit({ prompt: "holder", config: { simulate: { steps: 100, step_ms: 600_000 } } })));
  const held = await cpuSeries(3);
  const endedBefore = await jobsEnded();
  const started = Date.now();
  let tags = 0;
  await seedJobs(LINE_SIZE, (n) => {
    // n counts up, so the last job's tag is the last tag.
    tags = Math.floor(n / LINE_TAG_JOBS) + 1;
    return lineJob(n);
  });
  console.error(`  (${LINE_SIZE} jobs in line in ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  // Thousands of objects just created are closed, and written back, over the next minutes.
  await quiet(300_000);
  const line = await cpuSeries(6);
  // A job that ended meanwhile freed a slot: the figure would not be of a line where nothing frees.
  const ended = (await jobsEnded()) - endedBefore;
  if (ended > 0) throw new Error(`idle line: ${ended} jobs ended while the line was seeded and measured`);
  const series = (windows: number[]) => windows.map((cpu) => cpu.toFixed(1)).join(", ");
  report(
    `CPU while ${LINE_SIZE} jobs wait and nothing frees`,
    `${line.at(-1)!.toFixed(1)} ms/s (windows: ${series(line)})`,
    `same server, every slot held and no job waiting: ${held.at(-1)!.toFixed(1)} ms/s (windows: ${series(held)}); nothing running: ${empty.at(-1)!.toFixed(1)} ms/s (windows: ${series(empty)})`,
  );
  // What the line costs a submit once it is long: the same submit as on the empty line.
  const lineSubmit = await load(laterSubmit);
  report(
    `submit, its job not yet due, with ${LINE_SIZE} jobs in line`,
    describeRun(lineSubmit),
    `${pct(lineSubmit.rate / emptySubmit.rate)} of the same submit on the empty line (${emptySubmit.rate.toFixed(0)} req/s); CPU/req ${(lineSubmit.cpuPerRequest / emptySubmit.cpuPerRequest).toFixed(2)}x`,
  );
  // Clear the line, so that the next figures start on a quiet server: its jobs are cancelled in
  // bulk, then the holders (letting 100,000 jobs run, 10 at a time, would take hours).
  for (let tag = 0; tag < tags; tag++) {
    const res = await fetch(`${BASE}/api/v1/runs/bulk/cancel`, { method: "POST", headers: json, body: JSON.stringify({ tags: [`line-${tag}`] }) });
    if (res.status !== 202) throw new Error(`idle line: cancelling the line's jobs answered ${res.status} ${await res.text()}`);
    const { bulk_id } = (await res.json()) as { bulk_id: string };
    while (((await (await fetch(`${BASE}/api/v1/runs/bulk/${bulk_id}`)).json()) as { state: string }).state !== "done") {
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  for (const id of holders) await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" });
}

/** The line figure's jobs carry a tag for every so many, since a bulk cancel matches at most 100,000 jobs. */
const LINE_TAG_JOBS = 50_000;
const lineJob = (n: number) => JSON.stringify({ ...JSON.parse(quickJob), tags: [`line-${Math.floor(n / LINE_TAG_JOBS)}`] });

/**
 * The server's CPU in ms a second over `count` windows of 10 s, 20 s apart. The first windows
 * after many objects were made still hold workerd writing back those it closes last; the last
 * window is the figure.
 */
async function cpuSeries(count: number): Promise<number[]> {
  const windowMs = 10_000;
  const windows: number[] = [];
  for (let i = 0; i < count; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 20_000));
    windows.push((await cpuOver(windowMs)) / (windowMs / 1000));
  }
  return windows;
}

/** How many of the tenant's jobs have ended, from `/stats`. */
async function jobsEnded(): Promise<number> {
  const { by_status } = (await (await fetch(`${BASE}/stats`)).json()) as { by_status: Record<string, number> };
  return by_status.succeeded + by_status.failed + by_status.cancelled;
}

export async function streamingMemory() {
  const id = await submit({ prompt: "memory", config: { simulate: { steps: 4, step_ms: 0, output_bytes: 100 * MiB } } });
  await finished(id);
  const baseline = treeRss(server.process.pid!);
  const { peak } = await peakRssDuring(server.process.pid!, async () => {
    const res = await fetch(`${BASE}/api/v1/runs/${id}/output`);
    for await (const _ of res.body as unknown as AsyncIterable<Uint8Array>);
  });
  report("memory growth while streaming 100 MiB", `${((peak - baseline) / MiB).toFixed(1)} MiB`, `baseline ${(baseline / MiB).toFixed(0)} MiB (target < 64 MiB)`);
}
