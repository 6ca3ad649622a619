/**
 * What the chaos run's clients do, as frontends would: submit with every queue control (some
 * through the tenant's scoped token, some kept only seconds after they end), poll, cancel, delete,
 * retry, answer a run that asks (some answers racing a cancel or a second answer), and cancel or
 * delete a group of runs in bulk. Each answer is checked against the contract as it comes.
 */
import { type Answer, call, hookUrl, until } from "./service";
import { shortRead, tokens } from "./tokens";
import { GROUPS, SEED, between, bulkEpoch, bulkPending, chance, cutShort, forcedBulkDeletes, jobs, live, pick, problem, purged, random, sleep, tally, type Job, type Tenant } from "./world";

let submitted = 0;
/** `viaToken`: made through the tenant's scoped token, not its key. */
async function submit(tenant: Tenant, retryOf?: Job, viaToken = false): Promise<void> {
  const token = viaToken ? tokens.get(tenant) : undefined;
  if (viaToken && (!token || token.spent)) return;
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token.token}` } : {};
  const n = submitted++;
  const key = `chaos-${SEED}-${n}`;
  const group = retryOf?.group ?? pick([...Array(GROUPS).keys()].filter((g) => !bulkPending.has(`${tenant}/${g}`)));
  if (group === undefined) return;
  const epoch = bulkEpoch.get(`${tenant}/${group}`) ?? 0;
  // A bulk operation on the group begun meanwhile may or may not have matched the new job.
  const gone = () => (bulkPending.has(`${tenant}/${group}`) || (bulkEpoch.get(`${tenant}/${group}`) ?? 0) !== epoch ? "bulk" : false);
  const sent = Date.now();
  const wasCutShort = (res: { unanswered: number }, lineage: string) => {
    if (res.unanswered > 0) cutShort.push({ lineage, group: `${tenant}/${group}`, retry: retryOf !== undefined, from: sent, to: Date.now() });
  };
  if (retryOf) {
    const res = await until(tenant, "POST", `/api/v1/runs/${retryOf.id}/retry`, {}, { "idempotency-key": key });
    wasCutShort(res, retryOf.lineage);
    if (res.status === 202) {
      tally.retries++;
      jobs.push({ id: res.json.job_id, tenant, key, body: "", lineage: retryOf.lineage, webhook: retryOf.webhook, group, gone: gone(), retention_s: retryOf.retention_s });
    } else if (res.status !== 400 && res.status !== 404) problem(`retry of ${retryOf.id} → ${res.status} ${JSON.stringify(res.json)}`);
    return;
  }
  // A token may not name a webhook (403): its jobs have none.
  const webhook = !token && chance(0.4);
  const steps = between(1, 4);
  // At least a few seconds: a submit whose answer a kill lost is sent again within a second of the
  // restart, and must still find its job under its key (a purge frees the key, as a delete does).
  const retention = chance(0.15) ? between(3, 10) : undefined;
  const body = JSON.stringify({
    prompt: `chaos ${n}`,
    idempotency_key: key,
    config: {
      simulate: {
        steps,
        step_ms: between(100, 1000),
        output_bytes: between(0, 50_000),
        ...(chance(0.15) ? { fail_at_step: between(1, steps) } : {}),
        ...(chance(0.15) ? { input_at_step: between(1, steps) } : {}),
      },
    },
    priority: between(0, 9),
    ...(chance(0.3) ? { concurrency_key: pick(["k1", "k2"]) } : {}),
    ...(chance(0.2) ? { delay_seconds: between(1, 8) } : {}),
    ...(chance(0.15) ? { queue_ttl_seconds: between(3, 20) } : {}),
    ...(webhook ? { webhook_url: hookUrl(key) } : {}),
    ...(retention ? { retention_seconds: retention } : {}),
    metadata: { chaos: String(SEED), group: String(group) },
  });
  const res = await until(tenant, "POST", "/api/v1/runs", body, auth);
  wasCutShort(res, key);
  if (token && res.status === 403 && res.json?.detail === "Token submit limit reached") {
    tally.token_refused++;
    token.spent = true;
    return;
  }
  if (res.status !== 202) return problem(`submit ${key} → ${res.status} ${JSON.stringify(res.json)}`);
  tally.submits++;
  if (token) {
    tally.token_submits++;
    token.made.add(res.json.job_id);
  }
  jobs.push({ id: res.json.job_id, tenant, key, body, lineage: key, webhook, group, gone: gone(), token: token?.token, retention_s: retention });
}

/**
 * A read of the job: what it answers is what is known of it (404 only once it was deleted or purged).
 * Only a read sent after its delete was answered must find nothing: one sent while another client's
 * delete is on its way may be served first, and its answer may reach this client after the 204.
 */
async function poll(job: Job): Promise<void> {
  const deletedBefore = job.gone === true;
  const res = await call(job.tenant, "GET", `/api/v1/runs/${job.id}`);
  if (!res) return;
  tally.polls++;
  if (res.status === 200) {
    if (deletedBefore) problem(`deleted job ${job.id} answers ${res.json.status}`);
    job.status = res.json.status;
    job.error = res.json.error;
  } else if (res.status === 404) {
    if (job.gone === false && !purged(job)) problem(`job ${job.id} (${job.key}), never deleted, answers 404`);
  } else problem(`GET ${job.id} → ${res.status}`);
}

/** One of the tenant's clients: one act after another, chosen by the seed, while `running` says so. */
export async function operate(tenant: Tenant, running: () => boolean): Promise<void> {
  while (running()) {
    const mine = live(tenant);
    const job = mine.length > 0 ? pick(mine) : undefined;
    const roll = random();
    if (!job || roll < 0.35) await submit(tenant, undefined, chance(0.05));
    else if (roll < 0.6) {
      await poll(job);
      if (job.status === "awaiting_input" && chance(0.5)) await race(job);
    }
    else if (roll < 0.68) {
      await cancel(job);
    } else if (roll < 0.8) {
      job.gone = "unknown";
      const res = await call(tenant, "DELETE", `/api/v1/runs/${job.id}?force=true`);
      if (res?.status === 204) (job.gone = true), tally.deletes++;
      else if (res && res.status !== 404) problem(`delete ${job.id} → ${res.status} ${JSON.stringify(res.json)}`);
      else if (res && !purged(job)) problem(`job ${job.id} (${job.key}), never deleted, answers 404 to its delete`), (job.gone = true);
    } else if (roll < 0.87) {
      await poll(job);
      if ((job.status === "failed" || job.status === "cancelled") && !bulkPending.has(`${tenant}/${job.group}`)) await submit(tenant, job);
    } else if (roll < 0.9) await bulk(tenant);
    else if (roll < 0.92) await shortRead(tenant, job);
    else {
      await poll(job);
      if (job.status === "awaiting_input" && chance(0.3)) await race(job);
      else if (job.status === "awaiting_input") await answer(job, pick(["approve", "approve", "approve", "revise", "reject"] as const));
    }
    await sleep(between(20, 150));
  }
}

/**
 * A bulk cancel or forced delete of one group's jobs, followed to its end: its counts must add up,
 * none may fail, and after a delete no job the group had before it may answer.
 */
async function bulk(tenant: Tenant): Promise<void> {
  const free = [...Array(GROUPS).keys()].filter((g) => !bulkPending.has(`${tenant}/${g}`));
  if (free.length === 0) return;
  const group = pick(free);
  const name = `${tenant}/${group}`;
  const action = chance(0.5) ? "cancel" : "delete";
  bulkPending.add(name);
  bulkEpoch.set(name, (bulkEpoch.get(name) ?? 0) + 1);
  const before = jobs.filter((j) => j.tenant === tenant && j.group === group && j.gone === false);
  for (const job of before) job.gone = "bulk";
  const from = Date.now();
  const res = await until(tenant, "POST", `/api/v1/runs/bulk/${action}`, { metadata: { group: String(group) }, ...(action === "delete" ? { force: true } : {}) });
  if (res.status !== 202) problem(`bulk ${action} of ${name} → ${res.status} ${JSON.stringify(res.json)}`);
  else {
    for (;;) {
      const progress = await until(tenant, "GET", `/api/v1/runs/bulk/${res.json.bulk_id}`);
      if (progress.status !== 200) {
        problem(`bulk ${res.json.bulk_id} → ${progress.status} ${JSON.stringify(progress.json)}`);
        break;
      }
      const { matched, done, skipped, failed, state } = progress.json;
      if (state === "done") {
        if (done + skipped + failed !== matched || failed !== 0) problem(`bulk ${action} of ${name}: ${JSON.stringify(progress.json)}`);
        break;
      }
      await sleep(500);
    }
    tally.bulks++;
  }
  if (action === "delete") forcedBulkDeletes.push({ group: name, from, to: Date.now() });
  await resolveBulk(jobs.filter((j) => j.tenant === tenant && j.group === group && j.gone === "bulk"), action === "delete" ? before : []);
  bulkPending.delete(name);
}

/** Whether each job a bulk operation may have removed is there; `mustBeGone`, a forced delete's, must not be. */
export async function resolveBulk(maybe: Job[], mustBeGone: Job[] = []): Promise<void> {
  for (const job of maybe) {
    const res = await until(job.tenant, "GET", `/api/v1/runs/${job.id}`);
    job.gone = res.status === 404;
    if (res.status === 200) job.status = res.json.status;
    if (!job.gone && mustBeGone.includes(job)) problem(`job ${job.id}, matched by a forced bulk delete, is still there (${job.status})`);
  }
}

/** A cancel: answered 200, the job must end cancelled; else refused as the contract says (400 once it ended). */
async function cancel(job: Job): Promise<Answer> {
  const res = await call(job.tenant, "POST", `/api/v1/runs/${job.id}/cancel`);
  if (res?.status === 200) (tally.cancels++, (job.cancelled = true));
  else if (res?.status === 400) {
    if (!/^Cannot cancel job with status: (succeeded|failed|cancelled)$/.test(res.json?.detail)) problem(`cancel ${job.id} → 400 ${JSON.stringify(res.json)}`);
  } else if (res && !(res.status === 404 && (job.gone !== false || purged(job)))) problem(`cancel ${job.id} → ${res.status} ${JSON.stringify(res.json)}`);
  return res;
}

let answered = 0;
export async function answer(job: Job, action: "approve" | "revise" | "reject" = "approve"): Promise<Answer> {
  const body = { action, ...(action === "approve" ? {} : { input: `chaos ${action} ${answered}` }) };
  const res = await call(job.tenant, "POST", `/api/v1/runs/${job.id}/input`, body, { "idempotency-key": `answer-${SEED}-${answered++}` });
  if (res?.status === 200) {
    tally.answers++;
    if (action === "reject") job.rejected = true;
  } else if (res?.status === 409) {
    if (!/^Job is not awaiting input\. Current status: [a-z_]+$/.test(res.json?.detail)) problem(`input ${job.id} → 409 ${JSON.stringify(res.json)}`);
  } else if (res && !(res.status === 404 && (job.gone !== false || purged(job)))) problem(`input ${job.id} → ${res.status} ${JSON.stringify(res.json)}`);
  return res;
}

/** How each race ended, counted for the report. */
export const raceWins: Record<string, number> = {};

/**
 * A person rejects a job awaiting input while someone else cancels it, or a second person
 * approves it: one wins, the other is refused, and the job ends as the winner says (checked at
 * the end through `rejected` and `cancelled`).
 */
async function race(job: Job): Promise<void> {
  tally.races++;
  const rival = chance(0.5) ? "cancel" : "approve";
  const [reject, other] = await Promise.all([answer(job, "reject"), rival === "cancel" ? cancel(job) : answer(job, "approve")]);
  if (reject?.status === 200 && other?.status === 200) problem(`a reject and a ${rival} of ${job.id} both won`);
  const outcome = `reject vs ${rival}: ${reject?.status === 200 ? "reject" : other?.status === 200 ? rival : "neither"} won`;
  raceWins[outcome] = (raceWins[outcome] ?? 0) + 1;
}
