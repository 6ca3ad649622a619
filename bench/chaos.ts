/**
 * `npm run bench:chaos`: two tenants use the service as their frontends would (submits with every
 * queue control, some kept only seconds after they end, some through a scoped token with a submit
 * limit, webhooks, people asked for input who approve, revise or reject, some racing a cancel or a
 * second answer, cancels, deletes, retries, bulk operations, polls, the live feed watched
 * throughout, reads and a feed through tokens that live a minute) while `wrangler dev` is killed
 * with SIGKILL every few seconds and restarted on the same state. Then, with the server left
 * running, every job must reach its end, and what the service says must add up: each job that was
 * answered 202 and neither deleted nor purged is listed once under its own tenant and counted in
 * its stats, each deleted or purged one answers 404, each idempotency key still names its job,
 * each bulk operation's counts add up, each job with a webhook had its end delivered and no
 * unknown job called back, each rejected job failed with the contract's error and each job whose
 * cancel was answered 200 ended cancelled (of two racing, never both), no token made more jobs
 * than its limit or reached past its session, each token's count came to the jobs it made, a
 * token is refused `Token expired` from its expiry and its feed closed then, streams number their
 * events in order and resume exactly, and each tenant's feed, resumed after every kill from the
 * last event it had, told its changes in order, none twice, nothing of the other tenant, and ends
 * with every job's last status and every deletion (a purged job's after it ended). Last, every
 * job is deleted, the server stopped, and its state must hold nothing of them
 * (bench/leftovers.py). Prints what did not add up and exits 1 if anything did not.
 *
 * CHAOS_SECONDS (60) of load and kills, CHAOS_KILL_MS (3000-9000 between kills), CHAOS_SEED
 * (random; printed, to make the same choices again), CHAOS_PORT (8005; its inspector 1316 above).
 * Requests lost to a kill are sent again as a client would: submits and retries under their
 * idempotency keys.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killServer, startServer, stopServer, type DevServer } from "../test/e2e/server";

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 60);
const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 1e6));
const [KILL_MIN_MS, KILL_MAX_MS] = (process.env.CHAOS_KILL_MS ?? "3000-9000").split("-").map(Number);
const SETTLE_MS = 600_000;
/** How long after granting a slot as a job joins the line asks the job whether it was made (src/tenant/TenantLine.ts). */
const SLOT_ASKED_AFTER_MS = 60_000;
const PORT = Number(process.env.CHAOS_PORT ?? 8005);
const TENANTS = ["alpha", "beta"] as const;
type Tenant = (typeof TENANTS)[number];
/** Several keys a tenant, so that the per-key rate limit (600 a minute) does not bound the load. */
const KEYS_PER_TENANT = 8;
const WORKERS_PER_TENANT = 4;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** mulberry32: the same seed makes the same choices. */
let state = SEED;
function random(): number {
  state = (state + 0x6d2b79f5) | 0;
  let t = Math.imul(state ^ (state >>> 15), 1 | state);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const chance = (p: number) => random() < p;
const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];

const keys = new Map<Tenant, string[]>(TENANTS.map((t) => [t, Array.from({ length: KEYS_PER_TENANT }, (_, i) => `chaos-${t}-${i}`)]));
const apiKeys = JSON.stringify(
  Object.fromEntries(TENANTS.flatMap((t) => keys.get(t)!.map((k) => [createHash("sha256").update(k).digest("hex"), t]))),
);

interface Job {
  id: string;
  tenant: Tenant;
  /** The submit's idempotency key and body, sent again to check the key still names the job. */
  key: string;
  body: string;
  webhook: boolean;
  /** Its `metadata.group`, which bulk operations select by. */
  group: number;
  /**
   * true once a delete was answered 204 or 404; "unknown" while a delete went unanswered, "bulk"
   * while a bulk operation on its group may remove it.
   */
  gone: boolean | "unknown" | "bulk";
  status?: string;
  error?: string | null;
  /** Made through the tenant's scoped token, whose `authorization` sends it again. */
  token?: string;
  /** A person rejected it at a request for input (answered 200): it must have failed for that. */
  rejected?: boolean;
  /** A cancel of it was answered 200: it must have ended cancelled. */
  cancelled?: boolean;
  /** Its `retention_seconds`: once it ends it is purged that long after, and answers 404. */
  retention_s?: number;
  /** Gone at the end of its retention, not by a delete. */
  purged?: boolean;
}

const jobs: Job[] = [];
const GROUPS = 8;
/** Groups (tenant/group) with a bulk operation under way, and how many each has had. */
const bulkPending = new Set<string>();
const bulkEpoch = new Map<string, number>();
const problems: string[] = [];
const tally = { kills: 0, submits: 0, unanswered: 0, cancels: 0, deletes: 0, retries: 0, answers: 0, races: 0, polls: 0, bulks: 0, purged: 0, token_submits: 0, token_refused: 0, short_reads: 0, short_expired: 0, s5xx: 0 };
function problem(text: string) {
  problems.push(text);
  console.error(`  ! ${text}`);
}

// ---- the webhook receiver --------------------------------------------------------------------

const hooks: { job_id: string; status: string; event?: string }[] = [];
let hookPort = 0;
const receiver = createServer((req: IncomingMessage, res) => {
  let body = "";
  req.on("data", (d) => (body += d));
  req.on("end", () => {
    // One delivery in ten fails, so that retries across kills are exercised too.
    if (chance(0.1)) return res.writeHead(500).end();
    try {
      hooks.push(JSON.parse(body));
    } catch {
      problem(`a webhook body that is not JSON: ${body.slice(0, 200)}`);
    }
    res.writeHead(200).end();
  });
});

// ---- the server, killed and restarted ---------------------------------------------------------

const persistTo = mkdtempSync(join(tmpdir(), "runs-chaos-"));
const args = [
  ...["--log-level", "log"],
  ...["--inspector-port", String(PORT + 1316)],
  ...["--var", `API_KEYS:${apiKeys}`],
  ...["--var", "WEBHOOK_ALLOW_PRIVATE:true", "--var", "WEBHOOK_RETRY_BASE_MS:1000", "--var", `WEBHOOK_SECRET:whsec_${Buffer.from("chaos-webhook-secret-32-bytes!!!").toString("base64")}`],
  ...["--var", "RETRY_BASE_MS:500", "--var", "MAX_RUNNING_PER_TENANT:4", "--var", "MAX_RUNNING_PER_KEY:1"],
  ...["--var", "TOKEN_SECRET:chaos-token-secret-of-32-characters"],
];
let server: DevServer;
let up = false;
/** When the server last started: slots granted before it are asked about by a minute after. */
let startedAt = 0;
const logs: string[] = [];

async function start() {
  server = await startServer(persistTo, args, PORT);
  startedAt = Date.now();
  up = true;
}
/** When the server was last killed. */
let lastKillAt = 0;
async function kill() {
  up = false;
  lastKillAt = Date.now();
  await killServer(server);
  logs.push(...server.output);
  tally.kills++;
}

// ---- requests ---------------------------------------------------------------------------------

const unheard: Record<string, number> = {};
type Answer = { status: number; json: any } | null;
let keyTurn = 0;

/** One request as the tenant; null when it went unanswered (server down, the proxy's 503, a 429, the service's 503). */
async function call(tenant: Tenant, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  if (!up) return null;
  const tenantKeys = keys.get(tenant)!;
  try {
    const res = await fetch(`${server.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${tenantKeys[keyTurn++ % tenantKeys.length]}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (res.status === 429 || res.status === 503) {
      const reason = `${res.status} ${text.slice(0, 80)}`;
      unheard[reason] = (unheard[reason] ?? 0) + 1;
      return null;
    }
    if (res.status >= 500) {
      tally.s5xx++;
      problem(`${method} ${path} → ${res.status} ${text.slice(0, 300)}`);
    }
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: res.status, json };
  } catch (error) {
    const reason = String((error as Error).cause ?? error).slice(0, 40);
    unheard[reason] = (unheard[reason] ?? 0) + 1;
    return null;
  }
}

/** Sends until answered, as a client whose request was lost would (safe for keyed submits and retries, deletes, reads). */
async function until(tenant: Tenant, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; json: any }> {
  for (;;) {
    const answer = await call(tenant, method, path, body, headers);
    if (answer) return answer;
    tally.unanswered++;
    await sleep(300);
  }
}

/** Hands each block of an event stream (an event or a ping) to `take` as it arrives, until the stream ends. */
async function eachEvent(body: NonNullable<Response["body"]>, take: (block: string) => void): Promise<void> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    buffer += read.value;
    for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
      take(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
    }
  }
}

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
  if (retryOf) {
    const res = await until(tenant, "POST", `/api/v1/runs/${retryOf.id}/retry`, {}, { "idempotency-key": key });
    if (res.status === 202) {
      tally.retries++;
      jobs.push({ id: res.json.job_id, tenant, key, body: "", webhook: retryOf.webhook, group, gone: gone(), retention_s: retryOf.retention_s });
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
    ...(webhook ? { webhook_url: `http://127.0.0.1:${hookPort}/hook` } : {}),
    ...(retention ? { retention_seconds: retention } : {}),
    metadata: { chaos: String(SEED), group: String(group) },
  });
  const res = await until(tenant, "POST", "/api/v1/runs", body, auth);
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
  jobs.push({ id: res.json.job_id, tenant, key, body, webhook, group, gone: gone(), token: token?.token, retention_s: retention });
}

/**
 * A 404 of a job with a retention is its purge, once it ended: from then on it is held to what a
 * delete must do (it answers 404 and is never listed again, its feed told it ended and then that it
 * was deleted, its webhook was delivered). False for any other job.
 */
function purged(job: Job): boolean {
  if (job.retention_s === undefined) return false;
  job.gone = true;
  job.purged = true;
  tally.purged++;
  return true;
}

const live = (tenant?: Tenant) => jobs.filter((j) => j.gone === false && (!tenant || j.tenant === tenant));

async function poll(job: Job): Promise<void> {
  const res = await call(job.tenant, "GET", `/api/v1/runs/${job.id}`);
  if (!res) return;
  tally.polls++;
  if (res.status === 200) {
    if (job.gone === true) problem(`deleted job ${job.id} answers ${res.json.status}`);
    job.status = res.json.status;
    job.error = res.json.error;
  } else if (res.status === 404) {
    if (job.gone === false && !purged(job)) problem(`job ${job.id} (${job.key}), never deleted, answers 404`);
  } else problem(`GET ${job.id} → ${res.status}`);
}

async function operate(tenant: Tenant, running: () => boolean): Promise<void> {
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
  await resolveBulk(jobs.filter((j) => j.tenant === tenant && j.group === group && j.gone === "bulk"), action === "delete" ? before : []);
  bulkPending.delete(name);
}

/** Whether each job a bulk operation may have removed is there; `mustBeGone`, a forced delete's, must not be. */
async function resolveBulk(maybe: Job[], mustBeGone: Job[] = []): Promise<void> {
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
async function answer(job: Job, action: "approve" | "revise" | "reject" = "approve"): Promise<Answer> {
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
const raceWins: Record<string, number> = {};

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

// ---- a scoped token each ---------------------------------------------------------------------

/** How many jobs each tenant's token may submit: far fewer than its workers try, so the limit is reached under load. */
const TOKEN_MAX_SUBMITS = 6;
interface TokenUse {
  token: string;
  session: string;
  /** The jobs it made (a submit answered 202). */
  made: Set<string>;
  /** Refused past its limit: no more submits are tried with it. */
  spent: boolean;
}
const tokens = new Map<Tenant, TokenUse>();

async function mintTokens(): Promise<void> {
  for (const tenant of TENANTS) {
    const session = sessionOf(tenant);
    const res = await until(tenant, "POST", "/api/v1/tokens", { scopes: ["submit", "read"], session_id: session, max_submits: TOKEN_MAX_SUBMITS, ttl_seconds: 86_400 });
    if (res.status !== 201) problem(`token for ${tenant} → ${res.status} ${JSON.stringify(res.json)}`);
    else tokens.set(tenant, { token: res.json.token, session, made: new Set(), spent: false });
  }
}

/** How long after a kill a token's counter may take to give back a submit the kill cut short: it asks a minute on. */
const COUNT_GIVEN_BACK_MS = 90_000;

/**
 * No token made more jobs than its limit, and its counter comes to count just the jobs it made
 * (a submit a kill cut short before its job is given back a minute on); each job it made carries
 * its session, and it reaches the jobs of its session (those and their retries) and no other.
 */
async function checkTokens(): Promise<void> {
  for (const [tenant, use] of tokens) {
    if (use.made.size > TOKEN_MAX_SUBMITS) problem(`${tenant}'s token made ${use.made.size} jobs, past its limit of ${TOKEN_MAX_SUBMITS}`);
    const auth = { authorization: `Bearer ${use.token}` };
    const owed = TOKEN_MAX_SUBMITS - use.made.size;
    const deadline = lastKillAt + COUNT_GIVEN_BACK_MS;
    const submitsLeft = async (): Promise<number> => (await until(tenant, "GET", "/api/v1/tokens/verify", undefined, auth)).json?.submits_left;
    let left = await submitsLeft();
    while (left < owed && Date.now() < deadline) left = await sleep(2000).then(submitsLeft);
    if (left > owed) problem(`${tenant}'s token made ${use.made.size} jobs of ${TOKEN_MAX_SUBMITS} and has ${left} submits left`);
    // A cut-short submit's job that found its key held by its repeat's job and was discarded only
    // after the counter first asked about it (its first report came more than a minute on) is given
    // back when the counter asks again, which may come after this check (as long again as the job
    // had waited, at most ten minutes).
    else if (left < owed) console.log(`  ${tenant}'s token made ${use.made.size} jobs of ${TOKEN_MAX_SUBMITS} and has ${left} submits left`);
    for (const job of live(tenant)) {
      const session = (await until(tenant, "GET", `/api/v1/runs/${job.id}`)).json?.session_id;
      if (job.token && session !== use.session) problem(`job ${job.id}, made through a token of session ${use.session}, has session ${session}`);
      const res = await until(tenant, "GET", `/api/v1/runs/${job.id}`, undefined, auth);
      if (res.status !== (session === use.session ? 200 : 404)) problem(`${tenant}'s token reading ${job.id}, of session ${session}, → ${res.status}`);
    }
  }
}

// ---- a token that lives a minute -------------------------------------------------------------

/**
 * The least a token may live. Each tenant's reads and watches its token session with one, used on
 * both sides of its expiry, and minted again once it expired.
 */
const SHORT_TTL_S = 60;
/** How long past its token's expiry a feed may still be open: the expiry's timer, under load. */
const EXPIRY_CLOSE_MS = 5_000;
interface ShortToken {
  token: string;
  expiresAt: number;
}
/** Each tenant's short tokens, the newest last. */
const shortTokens = new Map<Tenant, ShortToken[]>(TENANTS.map((t) => [t, []]));
const shortFeeds = { opened: 0, closed_at_expiry: 0, refused_after: 0, events: 0 };
const sessionOf = (tenant: Tenant) => `chaos-${SEED}-${tenant}`;

/** The tenant's short token, minted again when it has expired; null while the server does not answer. */
async function shortToken(tenant: Tenant): Promise<ShortToken | null> {
  const held = shortTokens.get(tenant)!.at(-1);
  if (held && Date.now() < held.expiresAt) return held;
  const res = await call(tenant, "POST", "/api/v1/tokens", { scopes: ["read", "stream"], session_id: sessionOf(tenant), ttl_seconds: SHORT_TTL_S });
  if (!res) return null;
  if (res.status !== 201) {
    problem(`short token for ${tenant} → ${res.status} ${JSON.stringify(res.json)}`);
    return null;
  }
  const minted = { token: res.json.token as string, expiresAt: Date.parse(res.json.expires_at) };
  shortTokens.get(tenant)!.push(minted);
  return minted;
}

const isExpired = (res: Answer) => res?.status === 401 && res.json?.detail === "Token expired";

/**
 * A read through one of the tenant's short tokens, the newest or the one before: answered as any
 * read (200 in its session, else 404) while it lives, `401 Token expired` once it has expired.
 */
async function shortRead(tenant: Tenant, job: Job): Promise<void> {
  const short = chance(0.5) ? shortTokens.get(tenant)!.at(-2) ?? (await shortToken(tenant)) : await shortToken(tenant);
  if (!short) return;
  const sent = Date.now();
  const res = await call(tenant, "GET", `/api/v1/runs/${job.id}`, undefined, { authorization: `Bearer ${short.token}` });
  if (!res) return;
  tally.short_reads++;
  if (Date.now() < short.expiresAt && res.status !== 200 && res.status !== 404) problem(`a short token read ${job.id} before its expiry → ${res.status} ${JSON.stringify(res.json)}`);
  if (sent >= short.expiresAt) {
    if (!isExpired(res)) problem(`a short token read ${job.id} ${sent - short.expiresAt} ms after its expiry → ${res.status} ${JSON.stringify(res.json)}`);
    tally.short_expired++;
  }
}

/**
 * The tenant's feed watched through its short token, as a page's EventSource does (`?token=`). A
 * connection no kill cut must stay open until the token expires and close within EXPIRY_CLOSE_MS of
 * it; opened again with that token it is refused `401 Token expired`; the next token resumes after
 * the last event. It tells only jobs of the token's session.
 */
async function watchShortFeed(tenant: Tenant, stopped: AbortSignal): Promise<void> {
  let last = 0;
  const url = (short: ShortToken) => `${server.base}/api/v1/runs/events?after=${last}&token=${encodeURIComponent(short.token)}`;
  while (!stopped.aborted) {
    const short = up ? await shortToken(tenant) : null;
    const kills = tally.kills;
    try {
      const res = short && (await fetch(url(short), { signal: stopped }));
      if (res && res.status === 200 && res.body) {
        shortFeeds.opened++;
        await eachEvent(res.body, (block) => {
          const id = /^id: (.*)$/m.exec(block)?.[1];
          if (id !== undefined) last = Number(id);
          const data = /^event: run$/m.test(block) ? /^data: (.*)$/m.exec(block)?.[1] : undefined;
          if (data === undefined) return;
          shortFeeds.events++;
          const job = JSON.parse(data);
          if (job.session_id !== sessionOf(tenant)) problem(`${tenant}'s feed through a token of session ${sessionOf(tenant)} told ${job.job_id} of session ${job.session_id}`);
        });
        const ended = Date.now();
        if (up && tally.kills === kills && !stopped.aborted) {
          if (ended < short!.expiresAt) problem(`${tenant}'s feed through a short token closed ${short!.expiresAt - ended} ms before the token expired`);
          else if (ended > short!.expiresAt + EXPIRY_CLOSE_MS) problem(`${tenant}'s feed through a short token closed ${ended - short!.expiresAt} ms after the token expired`);
          else shortFeeds.closed_at_expiry++;
        }
        if (up && Date.now() >= short!.expiresAt) {
          const again = await fetch(url(short!), { signal: stopped });
          const detail = again.status === 401 ? (await again.json())?.detail : await again.text();
          if (again.status === 401 && detail === "Token expired") shortFeeds.refused_after++;
          else if (again.status !== 429 && again.status !== 503) problem(`${tenant}'s feed opened again with an expired token → ${again.status} ${JSON.stringify(detail)}`);
        }
      } else if (res && !(res.status === 401 && Date.now() >= short!.expiresAt) && res.status !== 429 && res.status !== 503) {
        problem(`${tenant}'s feed through a short token → ${res.status} ${await res.text()}`);
      }
    } catch {
      // The server was killed (or the watch stopped): open it again once the server is up.
    }
    await sleep(200);
  }
}

// ---- the feed, watched through the kills ------------------------------------------------------

interface FeedWatch {
  tenant: Tenant;
  /** The last event's id: each connection resumes after it. */
  last: number;
  /** Each job's last status the feed told, and the jobs it told deleted. */
  told: Map<string, string>;
  deleted: Set<string>;
  connections: number;
  events: number;
  stopped: AbortController;
}
const feeds = TENANTS.map((tenant): FeedWatch => ({ tenant, last: 0, told: new Map(), deleted: new Set(), connections: 0, events: 0, stopped: new AbortController() }));

/** Reads the tenant's feed as a frontend does, opening it again after the last event it had whenever it ends. */
async function watchFeed(watch: FeedWatch): Promise<void> {
  const auth = { authorization: `Bearer ${keys.get(watch.tenant)![0]}` };
  while (!watch.stopped.signal.aborted) {
    if (up) {
      try {
        const res = await fetch(`${server.base}/api/v1/runs/events?after=${watch.last}`, { headers: auth, signal: watch.stopped.signal });
        if (res.status === 200 && res.body) {
          watch.connections++;
          await eachEvent(res.body, (block) => feedEvent(watch, block));
        } else if (res.status !== 429 && res.status !== 503) problem(`${watch.tenant}'s feed → ${res.status} ${await res.text()}`);
      } catch {
        // The server was killed (or the watch stopped): open it again once the server is up.
      }
    }
    await sleep(200);
  }
}

function feedEvent(watch: FeedWatch, block: string): void {
  const event = /^event: (.*)$/m.exec(block)?.[1];
  const id = /^id: (.*)$/m.exec(block)?.[1];
  const data = /^data: (.*)$/m.exec(block)?.[1];
  if (!event) return; // a ping
  watch.events++;
  if (event === "reset") problem(`${watch.tenant}'s feed, resumed after ${watch.last}, was reset (id ${id})`);
  else if (id === undefined || !(Number(id) > watch.last)) problem(`${watch.tenant}'s feed told ${event} ${id} after ${watch.last}`);
  if (id !== undefined) watch.last = Number(id);
  const jobId: string | undefined = data ? JSON.parse(data).job_id : undefined;
  if (!jobId) return;
  const owner = jobs.find((j) => j.id === jobId)?.tenant;
  if (owner && owner !== watch.tenant) problem(`${watch.tenant}'s feed told ${event} of ${owner}'s job ${jobId}`);
  if (event === "run") watch.told.set(jobId, JSON.parse(data!).status);
  else if (event === "deleted") watch.deleted.add(jobId);
}

/** Each tenant's feed comes to every job's last status, and told every deletion of a job it had told. */
async function checkFeeds(): Promise<void> {
  const wrong = () =>
    feeds.flatMap((watch) => [
      ...live(watch.tenant)
        .filter((j) => watch.told.get(j.id) !== j.status || watch.deleted.has(j.id))
        .map((j) => `${watch.tenant}'s feed has ${j.id} ${watch.deleted.has(j.id) ? "deleted" : watch.told.get(j.id) ?? "never told"}, which is ${j.status}`),
      ...jobs
        .filter((j) => j.tenant === watch.tenant && j.gone === true && watch.told.has(j.id) && !watch.deleted.has(j.id))
        .map((j) => `${watch.tenant}'s feed never told ${j.id} deleted (last told ${watch.told.get(j.id)})`),
      ...jobs
        .filter((j) => j.tenant === watch.tenant && j.purged && !TERMINAL.has(watch.told.get(j.id)!))
        .map((j) => `${watch.tenant}'s feed told ${j.id}, purged at the end of its retention, ${watch.told.get(j.id) ?? "never"} before its deletion`),
    ]);
  const deadline = Date.now() + 30_000;
  while (wrong().length > 0 && Date.now() < deadline) await sleep(1000);
  for (const text of wrong()) problem(text);
}

// ---- the checks -------------------------------------------------------------------------------

async function settle(): Promise<void> {
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
  const res = await fetch(`${server.base}/api/v1/runs/${job.id}/stream${after === undefined ? "" : `?after=${after}`}`, {
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

async function check(): Promise<void> {
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
  for (const hook of hooks) if (!known.has(hook.job_id)) problem(`a webhook for ${hook.job_id}, a job no answer named (${hook.status})`);
}

async function cleanUp(): Promise<void> {
  for (const job of live()) {
    const res = await until(job.tenant, "DELETE", `/api/v1/runs/${job.id}`);
    if (res.status !== 204) problem(`delete ${job.id} at the end → ${res.status} ${JSON.stringify(res.json)}`);
    job.gone = true;
  }
  // Purges and deliveries still owed finish in the objects' alarms; a slot granted to a submit cut
  // short before its job was made is taken back by the line a minute after it was granted.
  await sleep(Math.max(20_000, startedAt + SLOT_ASKED_AFTER_MS + 10_000 - Date.now()));
  await stopServer(server);
  logs.push(...server.output);
  const left = JSON.parse(execFileSync("python3", ["bench/leftovers.py", persistTo], { encoding: "utf8" })) as Record<string, number>;
  console.log(`left in the state: ${JSON.stringify(left)}`);
  for (const what of ["r2_objects", "job_objects_with_tables", "projection_rows", "idempotency_keys", "line_places"]) {
    if (left[what] !== 0) problem(`${left[what]} ${what} left after every job was deleted`);
  }
}

async function main() {
  console.log(`chaos: seed ${SEED}, ${SECONDS} s, a kill every ${KILL_MIN_MS}-${KILL_MAX_MS} ms; state in ${persistTo}`);
  // A port of its own each run, so that no other server's jobs call back here.
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  hookPort = (receiver.address() as AddressInfo).port;
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
  receiver.close();
  console.log(problems.length === 0 ? "chaos: everything added up" : `chaos: ${problems.length} problems`);
  process.exit(problems.length === 0 ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
