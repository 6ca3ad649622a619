/**
 * `npm run bench:against -- <revision> [submit|status] [rounds] [seconds]`: the service against
 * an earlier version of itself, any git revision, both served by `wrangler dev` side by side,
 * the two loads taken in turn, in rounds, the order reversed every other round: what a change did
 * to a figure, measured in one run on one machine. `submit` is the submit of a job not due while
 * the load lasts; `status`, the status read of a job that has finished. Before each load, both
 * servers have run the jobs of earlier loads and closed what those made, as in `npm run bench`,
 * and a submit's load stops after OBJECTS_PER_LOAD requests if its seconds have not run out first
 * (bench/measure.ts says why). The earlier version is checked out into a temporary git worktree,
 * on this checkout's node_modules (a revision whose dependencies differ cannot be served this way).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startServer, stopServer, type DevServer } from "../test/e2e/server";
import { finishedJobRead, idle, inTurns, laterSubmitFor, load, median, useServers, type LoadOptions } from "./measure";
import { releaseStateDirs, stateDir } from "./state";

/** Where the earlier version is served, beside the service (8005), the floor (8006) and the bench's webhook receiver (8007). */
const EARLIER_PORT = 8008;
const EARLIER_INSPECTOR_PORT = 9249;

/** The revision, checked out where `wrangler dev` can serve it. */
function checkout(revision: string): string {
  const dir = mkdtempSync(join(tmpdir(), "runs-earlier-"));
  try {
    execFileSync("git", ["worktree", "add", "--detach", dir, revision], { stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`${revision} could not be checked out: ${String((error as { stderr?: Buffer }).stderr ?? error).trim()}`);
  }
  symlinkSync(resolve("node_modules"), join(dir, "node_modules"));
  return dir;
}

function removeCheckout(dir: string): void {
  rmSync(join(dir, "node_modules"), { force: true });
  execFileSync("git", ["worktree", "remove", "--force", dir], { stdio: "ignore" });
}

type Taken = { rps: number; cpu: number };

async function main() {
  const [revision, figure = "submit", rounds = "5", seconds = "10"] = process.argv.slice(2);
  if (!revision) throw new Error("usage: npm run bench:against -- <revision> [submit|status] [rounds] [seconds]");
  if (figure !== "submit" && figure !== "status") throw new Error(`unknown figure ${figure}: submit or status`);
  const dir = checkout(revision);
  const args = ["--var", "MAX_QUEUED_PER_TENANT:1000000"];
  const servers: DevServer[] = [];
  try {
    const current = await startServer(stateDir("current"), args);
    servers.push(current);
    const earlier = await startServer(stateDir("earlier"), ["--config", join(dir, "wrangler.jsonc"), "--inspector-port", String(EARLIER_INSPECTOR_PORT), ...args], EARLIER_PORT);
    servers.push(earlier);
    useServers(current, earlier);
    const loads: Record<"current" | "earlier", LoadOptions> =
      figure === "submit"
        ? { current: laterSubmitFor(Number(seconds)), earlier: laterSubmitFor(Number(seconds)) }
        : { current: await finishedJobRead(current.base), earlier: await finishedJobRead(earlier.base) };
    const take = (server: DevServer, options: LoadOptions) => async (): Promise<Taken> => {
      const run = await load({ ...options, duration: Number(seconds) }, server);
      return { rps: run.rate, cpu: run.cpuPerRequest };
    };
    const settle = async () => {
      await idle(current);
      await idle(earlier);
    };
    const taken = (await inTurns(Number(rounds), [["current", take(current, loads.current)], ["earlier", take(earlier, loads.earlier)]], settle, (round, n) => {
      const [now, then] = [round.current!, round.earlier!];
      console.error(`  round ${n + 1}: this checkout ${now.rps.toFixed(0)} req/s, ${now.cpu.toFixed(2)} ms CPU; ${revision} ${then.rps.toFixed(0)} req/s, ${then.cpu.toFixed(2)} ms CPU`);
    })) as { current: Taken; earlier: Taken }[];
    const ratios = (of: (t: Taken) => number) => taken.map((round) => of(round.current) / of(round.earlier));
    const line = (name: string, xs: number[]) => console.log(`${name}: ${median(xs).toFixed(3)} (rounds: ${xs.map((x) => x.toFixed(2)).join(", ")})`);
    line(`${figure}, this checkout's requests a second, of ${revision}'s`, ratios((t) => t.rps));
    line(`${figure}, this checkout's CPU per request, of ${revision}'s`, ratios((t) => t.cpu));
  } finally {
    await Promise.all(servers.map((s) => stopServer(s)));
    releaseStateDirs();
    removeCheckout(dir);
  }
}

await main();
