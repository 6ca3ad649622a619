/**
 * `npm run bench:profile -- <route> [seconds]`: where the Worker's time goes under one kind of
 * load. It starts `wrangler dev` as the benchmark does, drives one route with autocannon, records
 * a V8 CPU profile of the Worker through wrangler's inspector meanwhile, and prints the functions
 * with the most samples, self and inclusive. Time spent inside a call into workerd (creating a
 * Durable Object and its database, say) is counted to the function that made the call.
 */
import autocannon from "autocannon";
import { writeFileSync } from "node:fs";
import { BASE, startServer, stopServer } from "../test/e2e/server";
import { inspector } from "./inspector";
import { IN_MEMORY, releaseStateDirs, stateDir } from "./state";

const INSPECTOR_PORT = 9230;
const quickJob = JSON.stringify({ prompt: "profile", config: { simulate: { steps: 1, step_ms: 0 } } });
const json = { "content-type": "application/json" };

type CallFrame = { functionName: string; url: string; lineNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame; children?: number[] };
type Profile = { nodes: ProfileNode[]; samples: number[] };

async function setUp(route: string): Promise<Partial<autocannon.Options>> {
  switch (route) {
    case "health":
      return { url: `${BASE}/health` };
    case "submit":
      return { url: `${BASE}/api/v1/runs`, method: "POST", headers: json, body: quickJob };
    case "submit-later": // the submit alone: its job is not due while the profile runs
      return { url: `${BASE}/api/v1/runs`, method: "POST", headers: json, body: JSON.stringify({ prompt: "profile", delay_seconds: 3600 }) };
    case "status": {
      const res = await fetch(`${BASE}/api/v1/runs`, { method: "POST", headers: json, body: quickJob });
      const { job_id } = (await res.json()) as { job_id: string };
      return { url: `${BASE}/api/v1/runs/${job_id}` };
    }
    case "list":
      return { url: `${BASE}/api/v1/runs` };
    default:
      throw new Error(`unknown route ${route}: health, submit, submit-later, status or list`);
  }
}

const label = (frame: CallFrame) => `${frame.functionName || "(anonymous)"} ${frame.url.split("/").pop() || "(native)"}:${frame.lineNumber + 1}`;

function summarise(profile: Profile, top = 25) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const sample of profile.samples) {
    const leaf = byId.get(sample)!;
    self.set(label(leaf.callFrame), (self.get(label(leaf.callFrame)) ?? 0) + 1);
    const seen = new Set<string>();
    for (let id: number | undefined = sample; id !== undefined; id = parent.get(id)) {
      const name = label(byId.get(id)!.callFrame);
      if (!seen.has(name)) inclusive.set(name, (inclusive.get(name) ?? 0) + 1);
      seen.add(name);
    }
  }
  const total = profile.samples.length;
  const print = (title: string, counts: Map<string, number>) => {
    console.log(`\n${title} (${total} samples)`);
    for (const [name, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${((100 * n) / total).toFixed(1).padStart(6)}%  ${name}`);
    }
  };
  print("self", self);
  print("inclusive", inclusive);
}

async function main() {
  const [route = "submit", seconds = "5"] = process.argv.slice(2);
  // Unminified, so that the functions are named as in the source. With BENCH_MEMORY=1, its state
  // is in memory, as for `npm run bench`, so that no wait on the disk is sampled.
  const server = await startServer(IN_MEMORY ? stateDir("profile") : undefined, ["--inspector-port", String(INSPECTOR_PORT), "--minify", "false"]);
  try {
    const options = await setUp(route);
    const session = await inspector(INSPECTOR_PORT);
    await session.send("Profiler.enable");
    await session.send("Profiler.setSamplingInterval", { interval: 500 });
    await session.send("Profiler.start");
    const result = await autocannon({ connections: 16, duration: Number(seconds), ...options } as autocannon.Options);
    const { profile } = await session.send<{ profile: Profile }>("Profiler.stop");
    session.close();
    console.log(`${route}: ${result.requests.average.toFixed(0)} req/s, p50 ${result.latency.p50} ms while profiled`);
    summarise(profile);
    // PROFILE_OUT=<file> keeps the whole profile (.cpuprofile: Chrome's DevTools open it).
    if (process.env.PROFILE_OUT) writeFileSync(process.env.PROFILE_OUT, JSON.stringify(profile));
  } finally {
    await stopServer(server);
    releaseStateDirs();
  }
}

await main();
