/**
 * `npm run bench:chaos`: two tenants use the service as their frontends would (submits with every
 * queue control, some kept only seconds after they end, some through a scoped token with a submit
 * limit, webhooks, people asked for input who approve, revise or reject, some racing a cancel or a
 * second answer, cancels, deletes, retries, bulk operations, polls, the live feed watched
 * throughout, reads and a feed through tokens that live a minute) while `wrangler dev` is killed
 * with SIGKILL every few seconds and restarted on the same state. Then, with the server left
 * running, every job must reach its end, and what the service says must add up: each job that was
 * answered 202 and neither deleted nor purged is listed once under its own tenant and counted in
 * its stats, each deleted or purged one answers 404, each idempotency key still names its job, each
 * bulk operation's counts add up, each job with a webhook had its end delivered and no unknown job
 * called back (but one a cut-short request made and a forced bulk delete removed before the request
 * was answered), each rejected job failed with the contract's error and each job whose cancel was
 * answered 200 ended cancelled (of two racing, never both), no token made more jobs than its limit
 * or reached past its session, each token's count came to the jobs it made, a token is refused
 * `Token expired` from its expiry and its feed closed then, streams number their events in order
 * and resume exactly, and each tenant's feed, resumed after every kill from the last event it had,
 * told its changes in order, none twice, nothing of the other tenant, and ends with every job's
 * last status and every deletion (a purged job's after it ended). Last, every job is deleted, the
 * server stopped, and its state must hold nothing of them but the copies of retries cut short, held
 * for an hour (bench/leftovers.py). Prints what did not add up and exits 1 if anything did not.
 *
 * CHAOS_SECONDS (60) of load and kills, CHAOS_KILL_MS (3000-9000 between kills), CHAOS_SEED
 * (random; printed, to make the same choices again), CHAOS_PORT (8005; its inspector 1316 above),
 * CHAOS_SHARDS (P,L: each tenant's projection shards and lines; 1,1).
 * Requests lost to a kill are sent again as a client would: submits and retries under their
 * idempotency keys.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { check, cleanUp, settle, unnamedDeleted } from "./checks";
import { feeds, watchFeed } from "./feeds";
import { operate, raceWins } from "./load";
import { closeHooks, hooks, kill, listenForHooks, logs, persistTo, start, unheard } from "./service";
import { mintTokens, shortFeeds, tokens, watchShortFeed } from "./tokens";
import { KILL_MAX_MS, KILL_MIN_MS, LINE_SHARDS, PROJECTION_SHARDS, SECONDS, SEED, TENANTS, WORKERS_PER_TENANT, between, jobs, live, problems, sleep, tally } from "./world";

async function main() {
  const shards = PROJECTION_SHARDS === 1 ? "one shard" : `${PROJECTION_SHARDS} shards`;
  const lines = LINE_SHARDS === 1 ? "one" : `${LINE_SHARDS} lines`;
  const sharded = PROJECTION_SHARDS > 1 || LINE_SHARDS > 1 ? `each tenant's projection in ${shards}, its line in ${lines}; ` : "";
  console.log(`chaos: seed ${SEED}, ${SECONDS} s, a kill every ${KILL_MIN_MS}-${KILL_MAX_MS} ms; ${sharded}state in ${persistTo}`);
  await listenForHooks();
  await start();
  await mintTokens();
  const watching = feeds.map(watchFeed);
  const shortStopped = new AbortController();
  const watchingShort = TENANTS.map((t) => watchShortFeed(t, shortStopped.signal));
  const end = Date.now() + SECONDS * 1000;
  const running = () => Date.now() < end;
  const progress = setInterval(() => console.log(`  ${JSON.stringify(tally)} unanswered: ${JSON.stringify(unheard)}`), 5000);
  const workers = TENANTS.flatMap((t) => Array.from({ length: WORKERS_PER_TENANT }, () => operate(t, running)));
  while (running()) {
    await sleep(Math.min(between(KILL_MIN_MS, KILL_MAX_MS), Math.max(0, end - Date.now())));
    if (!running()) break;
    await kill();
    await start();
  }
  await Promise.all(workers);
  clearInterval(progress);
  console.log(`load: ${JSON.stringify(tally)}; settling`);
  await settle();
  const ends = new Map<string, number>();
  for (const job of live()) ends.set(job.status!, (ends.get(job.status!) ?? 0) + 1);
  console.log(`settled: ${[...ends].map(([status, n]) => `${n} ${status}`).join(", ")}; ${jobs.filter((j) => j.gone === true).length} deleted; ${hooks.length} webhooks`);
  await check();
  if (unnamedDeleted.size > 0) console.log(`webhooks of jobs no answer named, each made by a request a kill cut short and removed by a forced bulk delete before the request was answered: ${[...unnamedDeleted].join(", ")}`);
  // The feeds through short tokens go on through the settling and the checks, with no kills, so
  // that some close at their token's expiry uncut.
  for (const watch of feeds) watch.stopped.abort();
  shortStopped.abort();
  await Promise.all([...watching, ...watchingShort]);
  console.log(`feeds: ${feeds.map((w) => `${w.tenant} ${w.events} events over ${w.connections} connections`).join(", ")}; tokens made ${[...tokens.values()].map((t) => t.made.size).join(" and ")} jobs; short tokens' feeds ${JSON.stringify(shortFeeds)}; races won ${JSON.stringify(raceWins)}`);
  await cleanUp();
  const logFile = join(persistTo, "..", `chaos-${SEED}.log`);
  writeFileSync(logFile, logs.join(""));
  const failures = new Map<string, number>();
  for (const line of logs.join("").split("\n")) {
    const what = line.includes('"event":"failure"') ? /"what":"([^"]*)"/.exec(line)?.[1] : line.includes("Uncaught") ? "uncaught" : null;
    if (what) failures.set(what, (failures.get(what) ?? 0) + 1);
  }
  console.log(`the service logged as failures: ${JSON.stringify(Object.fromEntries(failures))}; its log: ${logFile}`);
  closeHooks();
  console.log(problems.length === 0 ? "chaos: everything added up" : `chaos: ${problems.length} problems`);
  process.exit(problems.length === 0 ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
