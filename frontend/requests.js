// @ts-check
/**
 * How the page talks to the API: with the scoped token in use, if any; a refusal thrown with its
 * `detail`; a request that may be sent again sent again; an idempotency key kept for a request
 * that makes something until it is through. And the shapes of what the API answers.
 */

/** @typedef {{ percentage: number, current_step: string | null, steps_completed: number, steps_total: number | null }} Progress */
/** @typedef {{ step: string, prompt: string, output: string, requested_at: string, expires_at: string }} InputRequest */
/** @typedef {{ total_tokens: number, model_calls: number, estimated: boolean }} Usage */
/**
 * @typedef {{ job_id: string, status: string, progress: Progress, created_at: string, started_at: string | null,
 *   completed_at: string | null, error: string | null,
 *   tags: string[], session_id: string | null, agent_id: string | null, input_request: InputRequest | null,
 *   usage: Usage | null, retry_of: string | null, scheduled_for: string | null, queue_position: number | null }} Job
 */

/**
 * @typedef {{ expires_at: string | null, scopes: string[], runs: string[] | null, session_id: string | null,
 *   tags: string[] | null, max_submits: number | null, concurrency_key: string | null, priority: number | null,
 *   config: Record<string, string | number> | null, agent: string | null, metadata: Record<string, string> | null, submits_left: number | null }} Grant
 */

const TOKEN_KEY = "edge-runs-token";

/** The scoped token in use, if any: from the address's fragment (then forgotten there), else this tab's. */
export let token = takeTokenFromFragment() ?? sessionStorage.getItem(TOKEN_KEY);

function takeTokenFromFragment() {
  const found = new URLSearchParams(location.hash.slice(1)).get("token");
  if (found === null) return null;
  sessionStorage.setItem(TOKEN_KEY, found);
  history.replaceState(null, "", location.pathname + location.search);
  return found;
}

/** The token pasted in the page (null: none), kept for the tab. */
export function useToken(/** @type {string | null} */ pasted) {
  token = pasted;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * A mark of the token in use now: true while it stays in use. An answer to a request sent with a
 * token that another has replaced since is that token's, and the page, shaped to the later one,
 * drops it.
 */
export function tokenKept() {
  const asked = token;
  return () => token === asked;
}

export class ApiError extends Error {
  /** @param {number} status @param {string} detail */
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** How often a request is sent again when the answer asks for it (a deploy under way, a rate limit) or none came, and the longest wait an answer may ask. */
const RETRIES = 2;
const RETRY_WAIT_MAX_S = 5;
/** The wait before sending again a request whose connection was lost. */
const LOST_WAIT_S = 1;
/** A request whose answer has not begun within this long is taken for lost (a connection that died unheard). */
const ANSWER_WITHIN_S = 60;

/**
 * A request to the API, with the token when there is one; a refusal throws its `detail`. When
 * sending it again cannot act twice (a read, a delete, a request with an idempotency key, or one
 * its caller calls `repeatable`: a cancel, whose second is refused), it is sent again after a
 * refusal that may pass whose `Retry-After` (seconds, or a date) is short (1 s without one, or
 * with one it cannot read): a 503 (a deploy under way), another 5xx (a gateway in front that
 * could not reach the service), a 408 or a 429; and after its connection was lost (a network's
 * blip: 1 s later), or no answer began within 60 s (a connection that died unheard); twice at
 * most in all.
 */
export async function api(/** @type {string} */ path, /** @type {RequestInit & { json?: unknown, repeatable?: boolean }} */ init = {}) {
  const headers = withToken(init.headers);
  if (init.json !== undefined) headers.set("Content-Type", "application/json");
  const method = (init.method ?? "GET").toUpperCase();
  const repeatable = method === "GET" || method === "DELETE" || headers.has("Idempotency-Key") || init.repeatable === true;
  const send = async () => {
    const unanswered = new AbortController();
    const timer = setTimeout(() => unanswered.abort(new Error(`No answer from the service within ${ANSWER_WITHIN_S} s.`)), ANSWER_WITHIN_S * 1000);
    const signal = init.signal ? AbortSignal.any([init.signal, unanswered.signal]) : unanswered.signal;
    try {
      return await fetch(path, { ...init, headers, signal, body: init.json === undefined ? init.body : JSON.stringify(init.json) });
    } finally {
      clearTimeout(timer);
    }
  };
  for (let tries = 0; ; tries++) {
    /** @type {Response} */
    let res;
    try {
      res = await send();
    } catch (error) {
      // No answer came (fetch rejects only so, or when a signal aborts it: its caller's, or its wait's end).
      if (!repeatable || tries >= RETRIES || init.signal?.aborted) throw error;
      await new Promise((done) => setTimeout(done, LOST_WAIT_S * 1000));
      continue;
    }
    if (res.ok) return res;
    const wait = askedWaitS(res);
    const passing = res.status === 429 || res.status === 408 || res.status >= 500;
    if (!repeatable || tries >= RETRIES || !passing || !(wait >= 0 && wait <= RETRY_WAIT_MAX_S)) throw new ApiError(res.status, await refusal(res));
    await new Promise((done) => setTimeout(done, wait * 1000));
  }
}

/**
 * The wait in seconds an answer asks for with `Retry-After`: a number of seconds, or a date. An
 * answer without one, or with one the page cannot read, gets 1 s, as for a lost connection.
 */
function askedWaitS(/** @type {Response} */ res) {
  const asked = res.headers.get("Retry-After")?.trim() ?? "";
  if (/^\d+(\.\d+)?$/.test(asked)) return Number(asked);
  const at = /[a-z]/i.test(asked) ? Date.parse(asked) : Number.NaN;
  return Number.isNaN(at) ? LOST_WAIT_S : Math.max(0, (at - Date.now()) / 1000);
}

/**
 * What a refusal says: its `detail`, or each field's complaint of a validation error. An answer
 * without one came from something in between (a gateway, a proxy, the platform's error page), and
 * is told by its status (over HTTP/2 a browser gives no status text).
 */
async function refusal(/** @type {Response} */ res) {
  /** @type {unknown} */
  let detail;
  try {
    detail = (await res.json())?.detail;
  } catch {
    // not JSON
  }
  if (typeof detail === "string" && detail !== "") return detail;
  if (Array.isArray(detail) && detail.length > 0 && detail.every((d) => typeof d?.msg === "string")) {
    return detail.map((d) => d.msg).join("; ");
  }
  return `The service answered ${res.status}${res.statusText ? ` ${res.statusText}` : ""}.`;
}

/** `headers` with the token in use, if any. */
export function withToken(/** @type {HeadersInit | undefined} */ headers) {
  const sent = new Headers(headers);
  if (token) sent.set("Authorization", `Bearer ${token}`);
  return sent;
}

/**
 * A random UUID (version 4). Made of `crypto.getRandomValues`, which every page has, since
 * `crypto.randomUUID` is kept for secure contexts: a page opened over plain HTTP at any name but
 * localhost (a phone on the LAN) has none.
 */
function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * An idempotency key kept for a request that makes something (a run, an answer) until it is
 * through: asked again (the same `what`) after its reply was lost or refused for a while, it is the
 * same request, and the API answers it with what the first made or did, never doing it twice.
 */
export function keptKey() {
  /** @type {{ what: string, key: string } | null} */
  let kept = null;
  return {
    /** The key for `what`: the one kept, if it was for `what`; else a new one. */
    for: (/** @type {string} */ what) => {
      if (kept?.what !== what) kept = { what, key: randomKey() };
      return kept.key;
    },
    through: () => {
      kept = null;
    },
  };
}
