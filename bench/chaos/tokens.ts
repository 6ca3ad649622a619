/**
 * The chaos run's scoped tokens. Each tenant has one with a submit limit, which its clients submit
 * through until it is refused, and tokens that live a minute, minted one after another, which read
 * runs on both sides of their expiry and watch the tenant's feed through `?token=` as a page does.
 */
import { type Answer, call, eachEvent, service, until } from "./service";
import { FEED_START, SEED, TENANTS, chance, live, problem, sleep, tally, type Job, type Tenant } from "./world";

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
export const tokens = new Map<Tenant, TokenUse>();

export async function mintTokens(): Promise<void> {
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
export async function checkTokens(): Promise<void> {
  for (const [tenant, use] of tokens) {
    if (use.made.size > TOKEN_MAX_SUBMITS) problem(`${tenant}'s token made ${use.made.size} jobs, past its limit of ${TOKEN_MAX_SUBMITS}`);
    const auth = { authorization: `Bearer ${use.token}` };
    const owed = TOKEN_MAX_SUBMITS - use.made.size;
    const deadline = service.lastKillAt + COUNT_GIVEN_BACK_MS;
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
export const shortFeeds = { opened: 0, closed_at_expiry: 0, refused_after: 0, events: 0 };
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
export async function shortRead(tenant: Tenant, job: Job): Promise<void> {
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
export async function watchShortFeed(tenant: Tenant, stopped: AbortSignal): Promise<void> {
  let last = FEED_START;
  const url = (short: ShortToken) => `${service.base}/api/v1/runs/events?after=${last}&token=${encodeURIComponent(short.token)}`;
  while (!stopped.aborted) {
    const short = service.up ? await shortToken(tenant) : null;
    const kills = tally.kills;
    try {
      const res = short && (await fetch(url(short), { signal: stopped }));
      if (res && res.status === 200 && res.body) {
        shortFeeds.opened++;
        await eachEvent(res.body, (block) => {
          const id = /^id: (.*)$/m.exec(block)?.[1];
          if (id !== undefined) last = id;
          const data = /^event: run$/m.test(block) ? /^data: (.*)$/m.exec(block)?.[1] : undefined;
          if (data === undefined) return;
          shortFeeds.events++;
          const job = JSON.parse(data);
          if (job.session_id !== sessionOf(tenant)) problem(`${tenant}'s feed through a token of session ${sessionOf(tenant)} told ${job.job_id} of session ${job.session_id}`);
        });
        const ended = Date.now();
        if (service.up && tally.kills === kills && !stopped.aborted) {
          if (ended < short!.expiresAt) problem(`${tenant}'s feed through a short token closed ${short!.expiresAt - ended} ms before the token expired`);
          else if (ended > short!.expiresAt + EXPIRY_CLOSE_MS) problem(`${tenant}'s feed through a short token closed ${ended - short!.expiresAt} ms after the token expired`);
          else shortFeeds.closed_at_expiry++;
        }
        if (service.up && Date.now() >= short!.expiresAt) {
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
