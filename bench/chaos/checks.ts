/**
 * What the chaos run checks once the kills stop, with the server left running: every job comes to
 * its end, and what the service says adds up (see bench/chaos/main.ts). Last, every job is deleted
 * and the state, the server stopped, must hold nothing of them.
 */
import { execFileSync } from "node:child_process";
import { answer, resolveBulk } from "./load";
import { checkFeeds } from "./feeds";
import { hooks, persistTo, service, stop, until } from "./service";
import { checkTokens } from "./tokens";
import { SETTLE_MS, SLOT_ASKED_AFTER_MS, TENANTS, TERMINAL, chance, cutShort, jobs, keys, live, problem, purged, random, sleep, unnamedButDeleted, type Job, type Tenant } from "./world";

/** Jobs no answer named whose webhooks came: each made by a request cut short, then removed by a forced bulk delete before it was answered. */
export const unnamedDeleted = new Set<string>();

/**
 * Every job comes to its end (one with a retention, to its purge) within SETTLE_MS, a job awaiting
 * input approved; what a bulk operation or an unanswered delete left unknown is found out first.
 */
export async function settle(): Promise<void> {
  await resolveBulk(jobs.filter((j) => j.gone === "bulk"));
  for (const job of jobs.filter((j) => j.gone === "unknown")) {
    const res = await until(job.tenant, "DELETE", `/api/v1/runs/${job.id}?force=true`);
    if (res.status !== 204 && res.status !== 404) problem(`delete ${job.id} after the kills → ${res.status} ${JSON.stringify(res.json)}`);
    job.gone = true;
  }
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const pending: Job[] = [];
    for (const job of live()) {
      const res = await until(job.tenant, "GET", `/api/v1/runs/${job.id}`);
      if (res.status === 404) {
        if (!purged(job)) problem(`job ${job.id} (${job.key}), never deleted, is gone`);
        job.gone = true;
        continue;
      }
      job.status = res.json.status;
      job.error = res.json.error;
      if (job.status === "awaiting_input") await answer(job);
      // A job with a retention is waited for until its purge.
      if (!TERMINAL.has(job.status!) || job.retention_s !== undefined) pending.push(job);
    }
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      for (const job of pending) problem(`job ${job.id} (${job.key}) still ${job.status}${job.retention_s ? `, with a retention of ${job.retention_s} s,` : ""} ${SETTLE_MS / 1000} s after the last kill`);
      return;
    }
    await sleep(1000);
  }
}

/** The tenant's jobs as its list gives them, page after page by cursor, each listed once. */
async function listed(tenant: Tenant): Promise<Map<string, string>> {
  const seen = new Map<string, string>();
  let cursor: string | null = null;
  do {
    const res = await until(tenant, "GET", `/api/v1/runs?page_size=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    if (res.status !== 200) {
      problem(`list of ${tenant} → ${res.status} ${JSON.stringify(res.json)}`);
      break;
    }
    for (const job of res.json.jobs) {
      if (seen.has(job.job_id)) problem(`${job.job_id} listed twice for ${tenant}`);
      seen.set(job.job_id, job.status);
    }
    cursor = res.json.next_cursor;
  } while (cursor);
  return seen;
}

/** A finished job's stream, whole: its events' ids and data, up to `[DONE]`. */
async function stream(job: Job, after?: number): Promise<{ id: number; data: string }[] | null> {
  const tenantKeys = keys.get(job.tenant)!;
  const res = await fetch(`${service.base}/api/v1/runs/${job.id}/stream${after === undefined ? "" : `?after=${after}`}`, {
    headers: { authorization: `Bearer ${tenantKeys[0]}` },
    signal: AbortSignal.timeout(30_000),
  }).catch(() => null);
  if (!res || res.status !== 200) {
    problem(`stream of ${job.id} (${job.status}) → ${res?.status ?? "no answer"}`);
    return null;
  }
  const events: { id: number; data: string }[] = [];
  for (const block of (await res.text()).split("\n\n")) {
    const id = /^id: (\d+)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (data !== undefined) events.push({ id: id === undefined ? Number.NaN : Number(id), data });
  }
  return events;
}

/** Each finished job's stream numbers its events in order, ends with its status, and resumes from any of them with exactly the rest. */
async function checkStreams(sample: Job[]): Promise<void> {
  for (const job of sample) {
    const events = await stream(job);
    if (!events) continue;
    const numbered = events.filter((e) => !Number.isNaN(e.id));
    if (numbered.some((e, i) => i > 0 && e.id <= numbered[i - 1].id)) problem(`stream of ${job.id}: ids out of order ${numbered.map((e) => e.id).join(",")}`);
    const last = events.at(-1)?.data;
    const complete = events.at(-2)?.data;
    if (last !== "[DONE]" || !complete || JSON.parse(complete).event !== "complete" || JSON.parse(complete).data.status !== job.status) {
      problem(`stream of ${job.id} (${job.status}) ends ${complete} ${last}`);
      continue;
    }
    if (numbered.length < 2) continue;
    const from = numbered[Math.floor(random() * (numbered.length - 1))];
    const rest = await stream(job, from.id);
    const expected = events.slice(events.indexOf(from) + 1);
    if (rest && JSON.stringify(rest) !== JSON.stringify(expected)) problem(`stream of ${job.id} resumed after ${from.id}: ${rest.length} events, not the ${expected.length} after it`);
  }
}

/** Whatever the service says, once every job has ended, adds up (bench/chaos/main.ts says what must). */
export async function check(): Promise<void> {
  await checkStreams(live().filter(() => chance(0.1)));
  await checkTokens();
  await checkFeeds();
  for (const job of live().filter((j) => j.rejected)) {
    if (job.status !== "failed" || !job.error?.startsWith("Rejected at step ")) problem(`job ${job.id}, rejected, is ${job.status} (${job.error})`);
  }
  for (const job of live().filter((j) => j.cancelled && j.status !== "cancelled")) problem(`job ${job.id}, its cancel answered 200, is ${job.status} (${job.error})`);
  for (const tenant of TENANTS) {
    const mine = live(tenant);
    const list = await listed(tenant);
    for (const job of mine) {
      if (!list.has(job.id)) problem(`${tenant}'s job ${job.id} (${job.status}) is not listed`);
      else if (list.get(job.id) !== job.status) problem(`${tenant}'s job ${job.id} is ${job.status} but listed ${list.get(job.id)}`);
    }
    const known = new Set(jobs.map((j) => j.id));
    for (const id of list.keys()) if (!mine.some((j) => j.id === id)) problem(`${tenant} lists ${id}, ${known.has(id) ? "which was deleted" : "a job no answer named"}`);
    const stats = await until(tenant, "GET", "/stats");
    if (stats.json.total_jobs !== mine.length) problem(`${tenant}'s stats count ${stats.json.total_jobs} jobs, it has ${mine.length}`);
    for (const status of TERMINAL) {
      const n = mine.filter((j) => j.status === status).length;
      if ((stats.json.by_status[status] ?? 0) !== n) problem(`${tenant}'s stats count ${stats.json.by_status[status]} ${status}, it has ${n}`);
    }
    for (const job of mine.filter((j) => j.body)) {
      const res = await until(tenant, "POST", "/api/v1/runs", job.body, job.token ? { authorization: `Bearer ${job.token}` } : {});
      if (res.json?.job_id !== job.id) problem(`key ${job.key} sent again → ${res.status} ${JSON.stringify(res.json).slice(0, 200)}, not ${job.id}`);
    }
    const other = live(TENANTS.find((t) => t !== tenant));
    for (const job of other.slice(0, 20)) {
      const res = await until(tenant, "GET", `/api/v1/runs/${job.id}`);
      if (res.status !== 404) problem(`${tenant} reads another tenant's job ${job.id}: ${res.status}`);
    }
  }
  for (const job of jobs.filter((j) => j.gone === true)) {
    const res = await until(job.tenant, "GET", `/api/v1/runs/${job.id}`);
    if (res.status !== 404) problem(`deleted job ${job.id} answers ${res.status}`);
  }
  const known = new Set(jobs.map((j) => j.id));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const missing = [
      ...live().filter((j) => j.webhook && !hooks.some((h) => h.job_id === j.id && h.status === j.status)),
      ...jobs.filter((j) => j.purged && j.webhook && !hooks.some((h) => h.job_id === j.id && TERMINAL.has(h.status))),
    ];
    if (missing.length === 0 || Date.now() > deadline) {
      for (const job of missing) problem(`job ${job.id} ended ${job.purged ? "and was purged" : job.status} with no webhook saying so`);
      break;
    }
    await sleep(1000);
  }
  for (const hook of hooks.filter((h) => !known.has(h.job_id))) {
    if (unnamedButDeleted(hook.lineage)) unnamedDeleted.add(hook.job_id);
    else problem(`a webhook for ${hook.job_id}, a job no answer named (${hook.status})`);
  }
}

/** Deletes every job, stops the server once what is owed is done, and finds nothing of them left in its state. */
export async function cleanUp(): Promise<void> {
  for (const job of live()) {
    const res = await until(job.tenant, "DELETE", `/api/v1/runs/${job.id}`);
    if (res.status !== 204) problem(`delete ${job.id} at the end → ${res.status} ${JSON.stringify(res.json)}`);
    job.gone = true;
  }
  // Purges and deliveries still owed finish in the objects' alarms; a slot granted to a submit cut
  // short before its job was made is taken back by the line a minute after it was granted.
  await sleep(Math.max(20_000, service.startedAt + SLOT_ASKED_AFTER_MS + 10_000 - Date.now()));
  await stop();
  const left = JSON.parse(execFileSync("python3", ["bench/leftovers.py", persistTo], { encoding: "utf8" })) as Record<string, number>;
  console.log(`left in the state: ${JSON.stringify(left)}`);
  for (const what of ["r2_objects", "job_objects_with_tables", "projection_rows", "idempotency_keys", "line_places"]) {
    if (left[what] !== 0) problem(`${left[what]} ${what} left after every job was deleted`);
  }
  // A retry cut short after its copies and before its job: they are purged when its hold lapses, an hour on.
  const retriesCutShort = cutShort.filter((c) => c.retry).length;
  if (left.prefix_holds > retriesCutShort) problem(`${left.prefix_holds} output prefixes held, by ${retriesCutShort} retries a kill cut short`);
}
