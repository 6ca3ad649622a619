/**
 * `npm run bench:profile -- <route> [seconds]`: where the Worker's time goes under one kind of
 * load. It starts `wrangler dev` as the benchmark does, drives one route with autocannon, records
 * a V8 CPU profile of the Worker through wrangler's inspector meanwhile, and prints the functions
 * with the most samples, self and inclusive, each with the time it took per request. Time spent
 * inside a call into workerd (creating a Durable Object and its database, say) is counted to the
 * function that made the call. `floor-submit` and `floor-status` profile the floor's Worker
 * (bench/floor/) the same way, so that a function of ours can be set against what the floor spends.
 * A submit's load stops after OBJECTS_PER_LOAD requests if its seconds have not run out first
 * (bench/measure.ts says why).
 */
import { writeFileSync } from "node:fs";
import { startServer, stopServer } from "../test/e2e/server";
import { startFloor } from "./floor";
import { inspector } from "./inspector";
import { json, load, quickJob, quickSubmit, submitLoad, type LoadOptions } from "./measure";
import { IN_MEMORY, releaseStateDirs, stateDir } from "./state";

const INSPECTOR_PORT = 9230;

type CallFrame = { functionName: string; url: string; lineNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame; children?: number[] };
type Profile = { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };

/** The load for a route, on the server that serves it (the service, or the floor for `floor-*`). */
async function setUp(route: string, base: string): Promise<LoadOptions> {
  switch (route) {
    case "health":
      return { path: "/health" };
    case "submit":
    case "floor-submit":
      return quickSubmit;
    case "submit-later": // the submit alone: its job is not due while the profile runs
      return submitLoad(JSON.stringify({ prompt: "profile", delay_seconds: 3600 }));
    case "status":
    case "floor-status": {
      const res = await fetch(`${base}/api/v1/runs`, { method: "POST", headers: json, body: quickJob });
      const { job_id } = (await res.json()) as { job_id: string };
      return { path: `/api/v1/runs/${job_id}` };
    }
    case "list":
      return { path: "/api/v1/runs" };
    default:
      throw new Error(`unknown route ${route}: health, submit, submit-later, status, list, floor-submit or floor-status`);
  }
}

const label = (frame: CallFrame) => `${frame.functionName || "(anonymous)"} ${frame.url.split("/").pop() || "(native)"}:${frame.lineNumber + 1}`;

/**
 * The functions with the most time, self and inclusive: each as a share of the time and as
 * milliseconds of the Worker's thread per request (a sample lasts until the next one is taken).
 */
function summarise(profile: Profile, requests: number, top = 25) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const add = (counts: Map<string, number>, name: string, us: number) => counts.set(name, (counts.get(name) ?? 0) + us);
  let busy = 0;
  profile.samples.forEach((sample, i) => {
    const us = profile.timeDeltas[i + 1] ?? 0;
    const leaf = byId.get(sample)!;
    add(self, label(leaf.callFrame), us);
    if (leaf.callFrame.functionName !== "(idle)") busy += us;
    const seen = new Set<string>();
    for (let id: number | undefined = sample; id !== undefined; id = parent.get(id)) {
      const name = label(byId.get(id)!.callFrame);
      if (!seen.has(name)) add(inclusive, name, us);
      seen.add(name);
    }
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const ms = (us: number) => (us / 1000 / requests).toFixed(3);
  console.log(`${profile.samples.length} samples; the Worker's thread busy ${ms(busy)} ms per request`);
  const print = (title: string, counts: Map<string, number>) => {
    console.log(`\n${title}: share of the time, ms per request`);
    for (const [name, us] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${((100 * us) / total).toFixed(1).padStart(6)}%  ${ms(us).padStart(7)}  ${name}`);
    }
  };
  print("self", self);
  print("inclusive", inclusive);
}

async function main() {
  const [route = "submit", seconds = "5"] = process.argv.slice(2);
  // Unminified, so that the functions are named as in the source. With BENCH_MEMORY=1, its state
  // is in memory, as for `npm run bench`, so that no wait on the disk is sampled.
  const args = ["--inspector-port", String(INSPECTOR_PORT), "--minify", "false"];
  const state = IN_MEMORY ? stateDir("profile") : undefined;
  const server = route.startsWith("floor-")
    ? await startFloor(state, args)
    : await startServer(state, args);
  try {
    const options = await setUp(route, server.base);
    const session = await inspector(INSPECTOR_PORT);
    await session.send("Profiler.enable");
    await session.send("Profiler.setSamplingInterval", { interval: 500 });
    await session.send("Profiler.start");
    // Per request served, as load()'s figures are; load() names any request that failed.
    const result = await load({ ...options, duration: Number(seconds) }, server);
    const { profile } = await session.send<{ profile: Profile }>("Profiler.stop");
    session.close();
    console.log(`${route}: ${result.rate.toFixed(0)} req/s, p50 ${result.latency.p50} ms while profiled`);
    summarise(profile, result["2xx"]);
    // PROFILE_OUT=<file> keeps the whole profile (.cpuprofile: Chrome's DevTools open it).
    if (process.env.PROFILE_OUT) writeFileSync(process.env.PROFILE_OUT, JSON.stringify(profile));
  } finally {
    await stopServer(server);
    releaseStateDirs();
  }
}

await main();
