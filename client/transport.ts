/**
 * How the client sends a request: with its credential, and again where the answer may pass if it
 * is (a 429, a deploy's 503, a gateway's 502) or the connection was lost, as long as a second send
 * cannot act twice.
 */
import { retryAfterMs } from "../src/http/retry-after";

export interface ClientOptions {
  /** Default http://127.0.0.1:8005 */
  baseUrl?: string;
  /** An API key, or a scoped token (in a browser: never a key). */
  apiKey?: string;
  fetch?: typeof fetch;
  /**
   * How many times a request is sent again (default 2): after a 429, each time; and, when sending
   * it again cannot act twice, after a 503 (a deploy under way, "Service is being updated; retry
   * shortly", or an object overloaded), another 5xx (a gateway in between that could not reach the
   * service: a 502, a 504), a 408 or a lost connection. Each after its `Retry-After` when it has
   * one of at most a minute, else after a backoff.
   * A submit or retry is sent with an idempotency key (the caller's, else one made for it), so that
   * sending it again never makes a second job: the server answers a repeat with the job the first
   * made; so is an answer to a request for input, which is then given once. A delete sent again
   * after a lost connection and answered 404 was carried out by the first, as was a cancel sent
   * again and refused because the job is cancelled. With `maxRetries: 0` they carry only the
   * caller's key.
   */
  maxRetries?: number;
  /**
   * How long a job's stream or the feed may stay silent, its heartbeats included, before the
   * client takes the connection for lost and opens it again after its last event (default 45 s:
   * three of the service's 15 s heartbeats). A connection can die with neither side told (a phone
   * that changed networks, a NAT that forgot it); without this a stream would wait on it as long
   * as its runtime let it.
   */
  idleTimeoutMs?: number;
  /**
   * How long a request waits for its answer to begin (default 60 s) before it is taken for lost,
   * as a connection that died is: sent again when that cannot act twice, else thrown (`no answer
   * from the server within 60000 ms`). An answer's body, and a stream, are not bound by it.
   */
  timeoutMs?: number;
}

/**
 * An answer other than the one asked for, with the server's status, `detail` and request id (the
 * id of the server's log line for the request: quote it when asking why). An answer from something
 * in between that has no `detail` (a gateway's 502, say) gets what it says instead.
 */
export class RunsApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: unknown,
    readonly body: Record<string, unknown> = {},
    readonly requestId: string | null = null,
  ) {
    super(`${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.name = "RunsApiError";
  }
}

/** What one request is sent with, beyond its method and path. */
export interface SendOptions {
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Sending it twice cannot act twice (its body carries an idempotency key, as a header would; a cancel). */
  repeatable?: boolean;
  /**
   * A refusal that, to a request sent again after a lost connection, says the first was carried
   * out (a delete's 404); the request then answers it.
   */
  doneAfterLoss?: (res: Response) => Promise<boolean>;
}

/** The longest `Retry-After` the client waits out by itself; a longer one is the caller's to decide on. */
const MAX_RETRY_AFTER_MS = 60_000;

/** How long a request waits for its answer to begin by default. */
const TIMEOUT_MS = 60_000;

export class Transport {
  private readonly baseUrl: string;
  private readonly apiKey?: string;
  private readonly fetchImpl: typeof fetch;
  private readonly maxRetries: number;
  private readonly timeoutMs: number;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "http://127.0.0.1:8005").replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.maxRetries = options.maxRetries ?? 2;
    this.timeoutMs = options.timeoutMs ?? TIMEOUT_MS;
  }

  /** Sends the request, and again while its answer asks for that and sending it again cannot act twice. */
  async request(method: string, path: string, init: SendOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    // What may be sent again when it is not known whether the server acted: a read, a delete (done
    // twice, it leaves what once does), a write the server recognises as the same by its key, or
    // one the caller calls repeatable (a cancel, whose second is refused).
    const repeatable = method === "GET" || method === "HEAD" || method === "DELETE" || "Idempotency-Key" in headers || init.repeatable === true;
    let lost = false;
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      // This try given up once its answer is `timeoutMs` late (its body, read later, is not bound).
      const late = new AbortController();
      const timer = setTimeout(() => late.abort(new Error(`no answer from the server within ${this.timeoutMs} ms`)), this.timeoutMs);
      const signal = init.signal ? AbortSignal.any([init.signal, late.signal]) : late.signal;
      try {
        res = await this.fetchImpl(`${this.baseUrl}${path}`, { method, headers, body: init.body, signal });
      } catch (error) {
        if (init.signal?.aborted) throw error;
        if (!repeatable || attempt > this.maxRetries) throw late.signal.aborted ? late.signal.reason : error;
        lost = true;
        await sleep(backoffMs(attempt), init.signal);
        continue;
      } finally {
        clearTimeout(timer);
      }
      if (res.ok) return res;
      if (lost && init.doneAfterLoss && (await init.doneAfterLoss(res))) return res;
      const wait = attempt > this.maxRetries ? null : retryWaitMs(res, repeatable, attempt);
      if (wait === null) throw await apiError(res);
      await res.body?.cancel();
      await sleep(wait, init.signal);
    }
  }

  /** POSTs `body` as JSON; `keyed`: the body carries an idempotency key, so it may be sent again. */
  postJson(path: string, body: unknown, headers: Record<string, string> = {}, keyed = false): Promise<Response> {
    return this.request("POST", path, { headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body), repeatable: keyed });
  }

  /**
   * The idempotency key a write is sent with, as its `headers`: the caller's (an empty key is none,
   * as the server reads an empty `idempotency_key`), else, when the request may be sent again and
   * its body holds no key, one made here (`own`).
   */
  keyToSend(key: string | undefined, keyInBody = false): { own: string | undefined; headers: Record<string, string> } {
    const given = key || undefined;
    const own = given === undefined && !keyInBody && this.maxRetries > 0 ? randomKey() : undefined;
    const sent = given ?? own;
    return { own, headers: sent === undefined ? {} : { "Idempotency-Key": sent } };
  }
}

/**
 * Waits `ms`, or until `signal` is aborted, even before the wait began (an abort while a request
 * was on its way), and leaves no listener on the signal behind, however many waits it serves.
 */
export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const aborted = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }, ms);
    signal?.addEventListener("abort", aborted, { once: true });
  });

/**
 * The wait after `failures` failed tries in a row where the server named none: 0.5 s, 1 s, 2 s,
 * then at most 5 s, each less by up to a quarter at random (`random`, in [0, 1)), so that the
 * clients a deploy or a gateway refused at once do not all come back at once.
 */
export const backoffMs = (failures: number, random = Math.random()) => Math.min(5000, 250 * 2 ** failures) * (1 - random / 4);

/**
 * Whether an answer with this status refused a request that may pass if sent again: a 429 (refused
 * before anything was done), a 408, or a 5xx (a deploy under way, an object overloaded, a gateway
 * in between that could not reach the service). Any other refusal is the request's own.
 */
export const passing = (status: number) => status === 429 || status === 408 || status >= 500;

/**
 * How long to wait before sending a refused request again, or null when it is not to be: a 429
 * always (refused before anything was done), another refusal that may pass when the request may be
 * repeated (the server, or a gateway, may have acted on it), each after the wait it asks for, read
 * as the service reads a provider's (`Retry-After` in seconds or as a date, or `retry-after-ms`)
 * up to a minute, else, when it asks for none it can be read as, after a backoff.
 */
function retryWaitMs(res: Response, repeatable: boolean, attempt: number): number | null {
  if (res.status !== 429 && !(passing(res.status) && repeatable)) return null;
  const asked = retryAfterMs(res.headers);
  if (asked === undefined) return backoffMs(attempt);
  return asked > MAX_RETRY_AFTER_MS ? null : asked;
}

/**
 * The refusal a non-2xx answer carries: the API's `detail`. An answer without one came from
 * something in between (a gateway, a proxy, the platform's error page), and its `detail` is what
 * it says: a JSON body's `message` or `error`, a short plain-text body, else its status text.
 */
export async function apiError(res: Response): Promise<RunsApiError> {
  const text = await res.text().catch(() => "");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const body = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  const plain = /^text\/plain/i.test(res.headers.get("Content-Type") ?? "") ? text.trim().split(/\r?\n/)[0].slice(0, 200) : "";
  const said = [body.message, body.error, plain, res.statusText].find((s): s is string => typeof s === "string" && s !== "");
  const detail = body.detail !== undefined ? body.detail : (said ?? "(no detail)");
  return new RunsApiError(res.status, detail, body, res.headers.get("X-Request-Id"));
}

/**
 * A random UUID (version 4). Made of `crypto.getRandomValues`, which every runtime has, since a
 * browser keeps `crypto.randomUUID` for secure contexts: a page served over plain HTTP at any name
 * but localhost (a phone on the LAN) has none.
 */
function randomKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
