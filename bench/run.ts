/**
 * `npm run bench`: the service under load on `wrangler dev` (127.0.0.1:8005, --log-level warn),
 * driven by autocannon in bounded runs. Every load figure is set against a baseline measured just
 * before it on the same server: GET /health, a route that touches no object. Submit and status
 * are also set against the floor (bench/floor/, on 127.0.0.1:8006): a Worker whose
 * submit only creates a job's Durable Object and writes one row and an alarm in it, and against
 * the floor of this design: the same submit with the two calls on the tenant's objects it must make,
 * in requests a second and in CPU per request. BENCH_MEMORY=1 keeps every server's state in memory.
 */
import { BASE, startServer, stopServer } from "../test/e2e/server";
import { startFloor } from "./floor";
import { cancelLatency, cancelWithStalledReceiver, deletes, idleLine, streamingMemory, throughput, watchers } from "./lifecycle";
import { filteredLists, listScaling, shardedReads } from "./lists";
import { describeRun, idle, LIST_ONLY, load, pct, printReport, report, SECONDS, useServers } from "./measure";
import { IN_MEMORY, releaseStateDirs, stateDir } from "./state";

// A state directory kept from an earlier run (its path is printed at the start) is used as it is:
// only the jobs still missing from the largest list size are seeded.
const STATE = process.env.BENCH_STATE || undefined;

async function main() {
  // Webhooks may go to the local receiver of the stalled-receiver figure; the filtered lists seed up
  // to 100,000 waiting jobs beside any others.
  const server = await startServer(STATE ?? stateDir("bench"), ["--var", "WEBHOOK_ALLOW_PRIVATE:true", "--var", "MAX_QUEUED_PER_TENANT:1000000"]); // --log-level warn, on loopback
  const floor = await startFloor(stateDir("floor"), ["--inspector-port", "9239"]);
  useServers(server, floor);
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
    report("bare route again, at the end", describeRun(recheck), `${pct(recheck.rate / baseline.rate)} of the first baseline`);
  } finally {
    await stopServer(floor);
    await stopServer(server);
    releaseStateDirs();
  }
  printReport();
}

await main();
