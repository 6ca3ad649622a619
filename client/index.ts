/**
 * A typed client of the runs API. Its types come from the service's own zod schemas, so they
 * cannot drift from what the server validates. It needs only `fetch` and web streams: it runs in
 * browsers, Node 18+ and Workers.
 */
import type {
  BulkAccepted,
  BulkInput,
  BulkProgress,
  Credential,
  InputBody,
  Job,
  ListQuery as ServerListQuery,
  RetryInput,
  RunList,
  RunResult,
  Stats,
  Status,
  SubmitInput,
  SubmitResponse,
  TokenInput,
  TokenResponse,
} from "../src/schemas";
import { sseBlocks, type SseBlock } from "./sse";

export type { BulkAccepted, BulkInput, BulkProgress, Credential, InputBody, Job, RetryInput, RunList, RunResult, Stats, Status, SubmitInput, SubmitResponse, TokenInput, TokenResponse };

/** What a list or the feed is narrowed to: tags (every one) and metadata entries (exact, at most 5). */
export interface RunFilter {
  status?: Status;
  session_id?: string;
  tags?: string[];
  metadata?: Record<string, string>;
}

export type ListQuery = Omit<ServerListQuery, "tag" | "status"> & RunFilter;

/**
 * One change told by the tenant's feed: a job's new state, its deletion, or `reset` (list again).
 * Its id is a position to resume from, opaque: a number, or on a tenant whose projection is in
 * shards, every shard's position (`12.0.57`).
 */
export type FeedEvent = { id: string; event: "run"; job: Job } | { id: string; event: "deleted"; job_id: string } | { id: string; event: "reset" };

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

export interface ClientOptions {
  /** Default http://127.0.0.1:8005 */
  baseUrl?: string;
  /** An API key, or a scoped token (in a browser: never a key). */
  apiKey?: string;
  fetch?: typeof fetch;
  /**
   * How many times a request is sent again when its answer asks for that (default 2): a 429, and
   * a 503 (a deploy under way, "Service is being updated; retry shortly", or an object
   * overloaded), each after its `Retry-After` when that is at most a minute; and a lost connection.
   * A submit or retry is sent with an idempotency key (the caller's, else one made for it), so that
   * sending it again never makes a second job: the server answers a repeat with the job the first
   * made; so is an answer to a request for input, which is then given once. A delete sent again
   * after a lost connection and answered 404 was carried out by the first, as was a cancel sent
   * again and refused because the job is cancelled. With `maxRetries: 0` they carry only the
   * caller's key.
   */
  maxRetries?: number;
}

/** The longest `Retry-After` the client waits out by itself; a longer one is the caller's to decide on. */
const MAX_RETRY_AFTER_MS = 60_000;

/** One server-sent event of a job. */
export interface RunEvent {
  id: number;
  event: "progress" | "log" | "output" | "complete" | string;
  data: Record<string, unknown>;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
/**
 * Waits `ms`, or until `signal` is aborted, even before the wait began (an abort while a request
 * was on its way), and leaves no listener on the signal behind, however many waits it serves.
 */
const sleep = (ms: number, signal?: AbortSignal) =>
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

export class RunsClient {
  private readonly baseUrl: string;
  private readonly apiKey?: string;
  private readonly fetchImpl: typeof fetch;
  private readonly maxRetries: number;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "http://127.0.0.1:8005").replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.maxRetries = options.maxRetries ?? 2;
  }

  /** Submits a job. `replayed` is true when the caller's idempotency key returned an earlier job. */
  async submit(body: SubmitInput, options: { idempotencyKey?: string } = {}): Promise<SubmitResponse & { replayed: boolean }> {
    return this.made("/api/v1/runs", body, options.idempotencyKey, !!body.idempotency_key);
  }

  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<Job> {
    return (await this.request("GET", this.path(id), { signal: options.signal })).json() as Promise<Job>;
  }

  async result(id: string): Promise<RunResult> {
    return (await this.request("GET", `${this.path(id)}/result`)).json() as Promise<RunResult>;
  }

  /** The output as a streamed Response (whole, or the byte range [start, end]). */
  async output(id: string, range?: { start: number; end?: number }): Promise<Response> {
    const headers: Record<string, string> = range ? { Range: `bytes=${range.start}-${range.end ?? ""}` } : {};
    return this.request("GET", `${this.path(id)}/output`, { headers });
  }

  async list(query: ListQuery = {}): Promise<RunList> {
    return (await this.request("GET", `/api/v1/runs${filterQuery(query)}`)).json() as Promise<RunList>;
  }

  /**
   * A short-lived token for a browser, reaching only what one user may see (API key only):
   * `scopes`, and `runs`, `session_id` or `tags`.
   */
  async mintToken(body: TokenInput): Promise<TokenResponse> {
    return (await this.postJson("/api/v1/tokens", body)).json() as Promise<TokenResponse>;
  }

  /** What the client's own credential may do: a token's scopes, reach, expiry and submits left; with a key, everything. */
  async verify(): Promise<Credential> {
    return (await this.request("GET", "/api/v1/tokens/verify")).json() as Promise<Credential>;
  }

  /** Every job matching the query, newest first, fetched page by page with the keyset cursor. */
  async *listAll(query: Omit<ListQuery, "page" | "cursor"> = {}): AsyncGenerator<Job> {
    let cursor: string | null | undefined;
    do {
      const page = await this.list({ ...query, ...(cursor ? { cursor } : {}) });
      yield* page.jobs;
      cursor = page.next_cursor;
    } while (cursor);
  }

  /**
   * Cancels a queued, running or awaiting_input job. Cancelling twice cannot act twice (the second
   * is refused), so a cancel whose connection was lost is sent again; refused then because the job
   * is cancelled, the first was carried out, and the job is read and answered.
   */
  async cancel(id: string): Promise<Job> {
    const res = await this.request("POST", `${this.path(id)}/cancel`, {
      repeatable: true,
      doneAfterLoss: async (res) => res.status === 400 && (await apiError(res.clone())).detail === "Cannot cancel job with status: cancelled",
    });
    if (res.ok) return (await res.json()) as Job;
    await res.body?.cancel();
    return this.get(id);
  }

  /**
   * Answers a job awaiting input: approve its step's answer (`input`: a note for the next tasks),
   * revise it (`input`: the feedback; the step runs again), or reject it (the job fails). Sent with
   * an idempotency key (the caller's, else, when it may be sent again, one made here), so that a
   * repeat after a lost reply or a deploy's 503 is answered with the job instead of a 409, and the
   * answer is given once.
   */
  async input(id: string, answer: InputBody, options: { idempotencyKey?: string } = {}): Promise<Job> {
    return (await this.postJson(`${this.path(id)}/input`, answer, this.keyToSend(options.idempotencyKey).headers)).json() as Promise<Job>;
  }

  /**
   * Retries a failed or cancelled job as a new one, from its first unfinished step (or
   * `from_step`); the finished steps' outputs are copied, not run again. With `idempotencyKey`,
   * a repeat returns the job the first made (`replayed`).
   */
  async retry(id: string, body: RetryInput = {}, options: { idempotencyKey?: string } = {}): Promise<SubmitResponse & { replayed: boolean }> {
    return this.made(`${this.path(id)}/retry`, body, options.idempotencyKey);
  }

  /**
   * Deletes a finished job; `force` cancels a queued or running one first. Sent again after its
   * connection was lost, a delete the first carried out is answered 404: the job is gone, as asked.
   */
  async delete(id: string, options: { force?: boolean } = {}): Promise<void> {
    const res = await this.request("DELETE", `${this.path(id)}${options.force ? "?force=true" : ""}`, { doneAfterLoss: async (res) => res.status === 404 });
    await res.body?.cancel();
  }

  /**
   * Cancels or deletes many jobs in the background (API key only): a filter `{status, session_id,
   * tags, metadata, created_before}` or `{job_ids}`; a delete takes `force`. Answers at once with how many matched.
   */
  async bulk(action: "cancel" | "delete", body: BulkInput): Promise<BulkAccepted> {
    return (await this.postJson(`/api/v1/runs/bulk/${action}`, body)).json() as Promise<BulkAccepted>;
  }

  /** A bulk operation's progress. */
  async bulkProgress(bulkId: string): Promise<BulkProgress> {
    return (await this.request("GET", `/api/v1/runs/bulk/${encodeURIComponent(bulkId)}`)).json() as Promise<BulkProgress>;
  }

  async stats(): Promise<Stats> {
    return (await this.request("GET", "/stats")).json() as Promise<Stats>;
  }

  /**
   * The job's events until it ends. A dropped connection, or a reconnection refused for a while (a
   * deploy's 503), is resumed with `Last-Event-ID`, so no event is lost or repeated (at most
   * `maxReconnects` times in a row without progress; then it throws what the last try met, or that
   * the stream kept dropping).
   */
  async *stream(id: string, options: { after?: number; signal?: AbortSignal; maxReconnects?: number } = {}): AsyncGenerator<RunEvent> {
    yield* this.resumed(`${this.path(id)}/stream`, { ...options, after: String(options.after ?? 0) }, `stream of ${id} kept dropping`, (block) => {
      if (block.data === "[DONE]") return END;
      if (block.id === null || block.data === "") return null;
      const parsed = JSON.parse(block.data) as { event: string; data: Record<string, unknown> };
      return { id: Number(block.id), event: parsed.event, data: parsed.data };
    });
  }

  /**
   * The tenant's live feed: every change of the jobs matching `filter`, for as long as the caller
   * iterates. A dropped connection, or a reconnection refused for a while (a deploy's 503), is
   * resumed with `Last-Event-ID`; a `reset` event says the feed could not resume and the caller
   * should list again. Past `maxReconnects` tries in a row without an event it throws what the last
   * try met (the service's refusal, or the network's error), or that the feed kept dropping.
   */
  async *watch(filter: RunFilter = {}, options: { after?: string; signal?: AbortSignal; maxReconnects?: number } = {}): AsyncGenerator<FeedEvent> {
    yield* this.resumed(`/api/v1/runs/events${filterQuery(filter)}`, options, "the feed kept dropping", (block): FeedEvent | null => {
      if (block.id === null) return null;
      if (block.event === "run") return { id: block.id, event: "run", job: JSON.parse(block.data) as Job };
      if (block.event === "deleted") return { id: block.id, event: "deleted", job_id: (JSON.parse(block.data) as { job_id: string }).job_id };
      if (block.event === "reset") return { id: block.id, event: "reset" };
      return null;
    });
  }

  /**
   * What `read` makes of the blocks of the event stream at `path` (null: a block it passes over;
   * END: the stream is over), for as long as the caller reads them. A dropped connection, a block
   * `read` cannot make out, or a refusal that passes (a 5xx, a 429: a deploy under way, a gateway
   * in between) is tried again with `Last-Event-ID`, the id of the last block read (at first
   * `after`), after a backoff; a refusal of the request itself (another 4xx) ends it. Past
   * `maxReconnects` tries in a row without a block read it throws what the last try met, or `dropped`.
   */
  private async *resumed<T>(
    path: string,
    options: { after?: string; signal?: AbortSignal; maxReconnects?: number },
    dropped: string,
    read: (block: SseBlock) => T | null | typeof END,
  ): AsyncGenerator<T> {
    let last = options.after;
    let failures = 0;
    for (;;) {
      // What this try met, if it failed: thrown once the tries run out.
      let met: unknown = null;
      try {
        const headers: Record<string, string> = last === undefined ? {} : { "Last-Event-ID": last };
        const res = await this.request("GET", path, { headers, signal: options.signal });
        for await (const block of sseBlocks(res.body!)) {
          const item = read(block);
          if (item === END) return;
          if (item === null || block.id === null) continue;
          last = block.id;
          failures = 0;
          yield item;
        }
      } catch (error) {
        if (final(error) || options.signal?.aborted) throw error;
        met = error;
      }
      if (++failures > (options.maxReconnects ?? 5)) throw met ?? new Error(dropped);
      await sleep(backoffMs(failures), options.signal);
    }
  }

  /**
   * Polls until the job ends (or, with `untilInput`, until it awaits a person's input), waiting
   * `retry_after` seconds between polls as the server asks. Aborting `signal` stops it at once,
   * whether it is waiting or a poll is on its way.
   */
  async waitForCompletion(id: string, options: { signal?: AbortSignal; onUpdate?: (job: Job) => void; untilInput?: boolean } = {}): Promise<Job> {
    for (;;) {
      const job = await this.get(id, { signal: options.signal });
      options.onUpdate?.(job);
      if (TERMINAL.has(job.status) || job.retry_after === null) return job;
      if (options.untilInput && job.status === "awaiting_input") return job;
      await sleep(job.retry_after * 1000, options.signal);
    }
  }

  /**
   * Sends a request that makes a job (a submit, a retry) with an idempotency key: the caller's,
   * else, when the request may be sent again, one made here, so that a repeat (after a lost answer,
   * or a deploy's 503) returns the job the first made instead of making a second. `replayed` is true
   * only where the caller's key returned an earlier job.
   */
  private async made(path: string, body: unknown, key: string | undefined, keyInBody = false): Promise<SubmitResponse & { replayed: boolean }> {
    const { own, headers } = this.keyToSend(key, keyInBody);
    const res = await this.postJson(path, body, headers, keyInBody);
    return { ...((await res.json()) as SubmitResponse), replayed: own === undefined && res.headers.get("Idempotent-Replayed") === "true" };
  }

  /**
   * The idempotency key a write is sent with, as its `headers`: the caller's (an empty key is none,
   * as the server reads an empty `idempotency_key`), else, when the request may be sent again and
   * its body holds no key, one made here (`own`).
   */
  private keyToSend(key: string | undefined, keyInBody = false): { own: string | undefined; headers: Record<string, string> } {
    const given = key || undefined;
    const own = given === undefined && !keyInBody && this.maxRetries > 0 ? randomKey() : undefined;
    const sent = given ?? own;
    return { own, headers: sent === undefined ? {} : { "Idempotency-Key": sent } };
  }

  private postJson(path: string, body: unknown, headers: Record<string, string> = {}, keyed = false): Promise<Response> {
    return this.request("POST", path, { headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body), repeatable: keyed });
  }

  private path(id: string): string {
    return `/api/v1/runs/${encodeURIComponent(id)}`;
  }

  /**
   * `repeatable`: sending it twice cannot act twice (its body carries an idempotency key, as a
   * header would; a cancel). `doneAfterLoss`: a refusal that, to a request sent again after a lost
   * connection, says the first was carried out (a delete's 404); the request then answers it.
   */
  private async request(
    method: string,
    path: string,
    init: { headers?: Record<string, string>; body?: string; signal?: AbortSignal; repeatable?: boolean; doneAfterLoss?: (res: Response) => Promise<boolean> } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    // What may be sent again when it is not known whether the server acted: a read, a delete (done
    // twice, it leaves what once does), a write the server recognises as the same by its key, or
    // one the caller calls repeatable (a cancel, whose second is refused).
    const repeatable = method === "GET" || method === "HEAD" || method === "DELETE" || "Idempotency-Key" in headers || init.repeatable === true;
    let lost = false;
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        res = await this.fetchImpl(`${this.baseUrl}${path}`, { method, headers, body: init.body, signal: init.signal });
      } catch (error) {
        if (!repeatable || attempt > this.maxRetries || init.signal?.aborted) throw error;
        lost = true;
        await sleep(backoffMs(attempt), init.signal);
        continue;
      }
      if (res.ok) return res;
      if (lost && init.doneAfterLoss && (await init.doneAfterLoss(res))) return res;
      const wait = attempt > this.maxRetries ? null : retryWaitMs(res, repeatable, attempt);
      if (wait === null) throw await apiError(res);
      await res.body?.cancel();
      await sleep(wait, init.signal);
    }
  }
}

/**
 * Whether a stream's or the feed's failure to open ends it: a refusal of the request itself (a
 * 4xx: not found, not allowed). A server error, a 429 or a lost connection passes (a deploy under
 * way answers 503 for some seconds), and the stream is opened again as after a dropped connection.
 */
const final = (error: unknown) => error instanceof RunsApiError && error.status < 500 && error.status !== 429;

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

/** What a stream's reader answers for the block that ends it (a job's `[DONE]`). */
const END = Symbol("end");

/** The wait after `failures` failed tries in a row where the server named none: 0.5 s, 1 s, 2 s, then at most 5 s. */
const backoffMs = (failures: number) => Math.min(5000, 250 * 2 ** failures);

/**
 * How long to wait before sending a refused request again, or null when it is not to be: a 429
 * always (refused before anything was done), a 503 when the request may be repeated, each after
 * its `Retry-After` (seconds) up to a minute.
 */
function retryWaitMs(res: Response, repeatable: boolean, attempt: number): number | null {
  if (res.status !== 429 && !(res.status === 503 && repeatable)) return null;
  const header = res.headers.get("Retry-After");
  if (header === null) return backoffMs(attempt);
  const seconds = Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(header) - Date.now();
  return Number.isNaN(ms) || ms > MAX_RETRY_AFTER_MS ? null : Math.max(0, ms);
}

/**
 * The refusal a non-2xx answer carries: the API's `detail`. An answer without one came from
 * something in between (a gateway, a proxy, the platform's error page), and its `detail` is what
 * it says: a JSON body's `message` or `error`, a short plain-text body, else its status text.
 */
async function apiError(res: Response): Promise<RunsApiError> {
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

/** A list's or the feed's filter as a query string. */
function filterQuery(query: ListQuery): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || key === "tags" || key === "metadata") continue;
    params.set(key, String(value));
  }
  for (const tag of query.tags ?? []) params.append("tag", tag);
  for (const [key, value] of Object.entries(query.metadata ?? {})) params.set(`metadata.${key}`, value);
  return params.size ? `?${params}` : "";
}
