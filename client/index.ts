/**
 * A typed client of the runs API. Its types come from the service's own zod schemas, so they
 * cannot drift from what the server validates. It needs only `fetch` and web streams: it runs in
 * browsers, Node 18+ and Workers. How a request is sent, and sent again, is ./transport's; how an
 * event stream is read, ./sse's.
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
import { apiError, backoffMs, passing, RunsApiError, sleep, Transport, type ClientOptions } from "./transport";

export { RunsApiError, type ClientOptions };
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

/** One server-sent event of a job. */
export interface RunEvent {
  id: number;
  event: "progress" | "log" | "output" | "complete" | string;
  data: Record<string, unknown>;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** How long a stream may stay silent by default: three of the service's heartbeats (15 s apart). */
const IDLE_TIMEOUT_MS = 45_000;

export class RunsClient {
  private readonly http: Transport;
  private readonly idleTimeoutMs: number;

  constructor(options: ClientOptions = {}) {
    this.http = new Transport(options);
    this.idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  }

  /** Submits a job. `replayed` is true when the caller's idempotency key returned an earlier job. */
  async submit(body: SubmitInput, options: { idempotencyKey?: string } = {}): Promise<SubmitResponse & { replayed: boolean }> {
    return this.made("/api/v1/runs", body, options.idempotencyKey, !!body.idempotency_key);
  }

  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<Job> {
    return (await this.http.request("GET", this.path(id), { signal: options.signal })).json() as Promise<Job>;
  }

  async result(id: string): Promise<RunResult> {
    return (await this.http.request("GET", `${this.path(id)}/result`)).json() as Promise<RunResult>;
  }

  /** The output as a streamed Response (whole, or the byte range [start, end]). */
  async output(id: string, range?: { start: number; end?: number }): Promise<Response> {
    const headers: Record<string, string> = range ? { Range: `bytes=${range.start}-${range.end ?? ""}` } : {};
    return this.http.request("GET", `${this.path(id)}/output`, { headers });
  }

  async list(query: ListQuery = {}): Promise<RunList> {
    return (await this.http.request("GET", `/api/v1/runs${filterQuery(query)}`)).json() as Promise<RunList>;
  }

  /**
   * A short-lived token for a browser, reaching only what one user may see (API key only):
   * `scopes`, and `runs`, `session_id` or `tags`.
   */
  async mintToken(body: TokenInput): Promise<TokenResponse> {
    return (await this.http.postJson("/api/v1/tokens", body)).json() as Promise<TokenResponse>;
  }

  /** What the client's own credential may do: a token's scopes, reach, expiry and submits left; with a key, everything. */
  async verify(): Promise<Credential> {
    return (await this.http.request("GET", "/api/v1/tokens/verify")).json() as Promise<Credential>;
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
    const res = await this.http.request("POST", `${this.path(id)}/cancel`, {
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
    return (await this.http.postJson(`${this.path(id)}/input`, answer, this.http.keyToSend(options.idempotencyKey).headers)).json() as Promise<Job>;
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
    const res = await this.http.request("DELETE", `${this.path(id)}${options.force ? "?force=true" : ""}`, { doneAfterLoss: async (res) => res.status === 404 });
    await res.body?.cancel();
  }

  /**
   * Cancels or deletes many jobs in the background (API key only): a filter `{status, session_id,
   * tags, metadata, created_before}` or `{job_ids}`; a delete takes `force`. Answers at once with how many matched.
   */
  async bulk(action: "cancel" | "delete", body: BulkInput): Promise<BulkAccepted> {
    return (await this.http.postJson(`/api/v1/runs/bulk/${action}`, body)).json() as Promise<BulkAccepted>;
  }

  /** A bulk operation's progress. */
  async bulkProgress(bulkId: string): Promise<BulkProgress> {
    return (await this.http.request("GET", `/api/v1/runs/bulk/${encodeURIComponent(bulkId)}`)).json() as Promise<BulkProgress>;
  }

  async stats(): Promise<Stats> {
    return (await this.http.request("GET", "/stats")).json() as Promise<Stats>;
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
   * END: the stream is over), for as long as the caller reads them. A dropped connection, one
   * silent for `idleTimeoutMs` (dead with no one told), a block `read` cannot make out, or a refusal
   * that passes (a 5xx, a 408, a 429: a deploy under way, a gateway in between) is tried again with
   * `Last-Event-ID`, the id of the last block read (at first `after`), after a backoff; a refusal of
   * the request itself (another 4xx) ends it. Past `maxReconnects` tries in a row without a block
   * read it throws what the last try met, or `dropped`.
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
      // This try's connection: let go when the caller aborts, or when it falls silent.
      const connection = new AbortController();
      const abandoned = () => connection.abort(options.signal?.reason);
      options.signal?.addEventListener("abort", abandoned, { once: true });
      let silence: ReturnType<typeof setTimeout> | undefined;
      const heard = () => {
        if (silence !== undefined) clearTimeout(silence);
        silence = setTimeout(() => connection.abort(new Error(`no word from the server for ${this.idleTimeoutMs} ms, heartbeats included`)), this.idleTimeoutMs);
      };
      try {
        if (options.signal?.aborted) abandoned();
        const headers: Record<string, string> = last === undefined ? {} : { "Last-Event-ID": last };
        const res = await this.http.request("GET", path, { headers, signal: connection.signal });
        heard();
        for await (const block of sseBlocks(res.body!, heard)) {
          const item = read(block);
          if (item === END) return;
          if (item === null || block.id === null) continue;
          last = block.id;
          failures = 0;
          // The caller's time with the item is not the server's silence.
          if (silence !== undefined) clearTimeout(silence);
          yield item;
          heard();
        }
      } catch (error) {
        if (final(error) || options.signal?.aborted) throw error;
        met = connection.signal.aborted ? connection.signal.reason : error;
      } finally {
        if (silence !== undefined) clearTimeout(silence);
        options.signal?.removeEventListener("abort", abandoned);
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
    const { own, headers } = this.http.keyToSend(key, keyInBody);
    const res = await this.http.postJson(path, body, headers, keyInBody);
    return { ...((await res.json()) as SubmitResponse), replayed: own === undefined && res.headers.get("Idempotent-Replayed") === "true" };
  }

  private path(id: string): string {
    return `/api/v1/runs/${encodeURIComponent(id)}`;
  }
}

/**
 * Whether a stream's or the feed's failure to open ends it: a refusal of the request itself (a
 * 4xx: not found, not allowed). A refusal that may pass (`passing`: a 5xx, a 408, a 429; a deploy
 * under way answers 503 for some seconds) or a lost connection does not end it: the stream is
 * opened again as after a dropped connection.
 */
const final = (error: unknown) => error instanceof RunsApiError && !passing(error.status);

/** What a stream's reader answers for the block that ends it (a job's `[DONE]`). */
const END = Symbol("end");

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
