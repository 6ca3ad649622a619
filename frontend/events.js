// @ts-check
/**
 * An event stream that comes back, read with fetch. (EventSource hides a stream's heartbeats from
 * the page, so that a connection that died unheard, on a phone that changed networks or behind a
 * NAT that forgot it, looks like a quiet one, and is waited on for good. It cannot send the token
 * in a header either.) Its connection cut, ended, or silent past SILENCE_MS, heartbeats included,
 * it is opened again after a wait (1 s, doubling up to 30 s; at once when the browser comes back
 * online meanwhile), after the last event it had (`?after=`). An answer other than a stream (a
 * 503 while a deploy is under way, a 429, a gateway's 502) is met the same way, unless what
 * refused it means it is over: the credential refused (asked of `/api/v1/tokens/verify`), or what
 * the caller asks (a run deleted). Then the page says why, and it stays closed.
 */
import { refused } from "./page.js";
import { ApiError, api, withToken } from "./requests.js";

const FIRST_WAIT_MS = 1_000;
const LONGEST_WAIT_MS = 30_000;
/** Silence after which a connection is taken for one that died unheard: three of the service's 15 s heartbeats. */
const SILENCE_MS = 45_000;

/**
 * @typedef {object} Watching
 * @property {(missed: boolean) => void} [open] the stream is open; `missed`: again, with no event had before, so
 *   from now (a feed's changes meanwhile are not in it)
 * @property {(gone: boolean) => void} [down] its connection dropped; then again with `gone` if it was closed for
 *   good and is not to be opened again
 * @property {() => Promise<boolean>} [reopen] asked once it is refused: whether to open it again (false once the
 *   page has said why not); by default, unless the credential is refused
 */

/**
 * The stream at `path` with `query` (and, opened again, `after` the id of the last event had), each
 * named event to its handler; `close` ends it.
 */
export function lastingEvents(
  /** @type {string} */ path,
  /** @type {URLSearchParams} */ query,
  /** @type {Record<string, (event: MessageEvent) => void>} */ handlers,
  /** @type {Watching} */ watching = {},
) {
  /** The connection in use: aborted once it is closed, or silent too long. */
  let connection = new AbortController();
  /** @type {string | null} */
  let after = null;
  let wait = FIRST_WAIT_MS;
  /** While it waits to be opened again: its timer (0 otherwise). */
  let timer = 0;
  let closed = false;
  let opened = false;
  const address = () => {
    const asked = new URLSearchParams(query);
    if (after !== null) asked.set("after", after);
    return asked.size > 0 ? `${path}?${asked}` : path;
  };
  const later = () => {
    timer = setTimeout(() => {
      timer = 0;
      void open();
    }, wait);
    wait = Math.min(wait * 2, LONGEST_WAIT_MS);
  };
  // The browser back online (out of a tunnel, say): a stream that waits to be opened again is
  // opened at once, not after a wait grown while it was offline.
  const online = () => {
    if (closed || timer === 0) return;
    clearTimeout(timer);
    timer = 0;
    wait = FIRST_WAIT_MS;
    void open();
  };
  addEventListener("online", online);
  /** Its connection cut, ended or silent: opened again after the last event had. */
  const dropped = () => {
    watching.down?.(false);
    later();
  };
  /** Refused: opened again, unless what refused it means it is over. */
  const refusedNow = () => {
    watching.down?.(false);
    void (watching.reopen ?? credentialHolds)().then((again) => {
      if (closed) return;
      if (!again) return watching.down?.(true);
      later();
    });
  };
  const told = (/** @type {Block} */ block) => {
    if (closed || !Object.hasOwn(handlers, block.event)) return;
    if (block.id) after = block.id;
    try {
      handlers[block.event](new MessageEvent(block.event, { data: block.data, lastEventId: block.id }));
    } catch (error) {
      // As an EventSource's listener that throws: said, and the stream goes on.
      reportError(error);
    }
  };
  const open = async () => {
    const current = (connection = new AbortController());
    // Given up once silent for SILENCE_MS: before its answer's head, and after each piece of it.
    let silence = 0;
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(() => current.abort(), SILENCE_MS);
    };
    heard();
    try {
      const res = await fetch(address(), { headers: withToken({ Accept: "text/event-stream" }), signal: current.signal });
      if (closed) return void res.body?.cancel();
      if (!res.ok || !res.headers.get("Content-Type")?.startsWith("text/event-stream")) {
        void res.body?.cancel();
        return refusedNow();
      }
      wait = FIRST_WAIT_MS;
      watching.open?.(opened && after === null);
      opened = true;
      await readBlocks(res.body, heard, told);
    } catch {
      // No answer came, or the connection was cut, or given up: said below, unless closed.
    } finally {
      clearTimeout(silence);
    }
    if (!closed) dropped();
  };
  void open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      removeEventListener("online", online);
      connection.abort();
    },
  };
}

/** @typedef {{ id: string, event: string, data: string }} Block */

/**
 * The blocks of an event stream's `body` to `told`, until it ends, as the event-stream format
 * defines them: lines end in CRLF, LF or CR; a field's value follows its colon with one optional
 * space; `data` lines are joined with newlines; a line that starts with a colon is a comment (a
 * heartbeat); an event's id is the last one given. `heard` is called at each piece that comes, a
 * comment too.
 */
async function readBlocks(/** @type {ReadableStream<Uint8Array> | null} */ body, /** @type {() => void} */ heard, /** @type {(block: Block) => void} */ told) {
  if (body === null) return;
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let rest = "";
  let id = "";
  let event = "";
  /** @type {string[]} */
  let data = [];
  const line = (/** @type {string} */ text) => {
    if (text === "") {
      if (data.length > 0) told({ id, event: event || "message", data: data.join("\n") });
      event = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? "" : text.slice(text[colon + 1] === " " ? colon + 2 : colon + 1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id" && !value.includes("\0")) id = value;
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      heard();
      const text = rest + decoder.decode(value, { stream: true });
      // A CR that ends the text so far may be the first half of a CRLF: it waits for what follows.
      const cr = text.endsWith("\r") ? "\r" : "";
      const lines = text.slice(0, text.length - cr.length).split(/\r\n|\r|\n/);
      // The last piece is a line not yet ended.
      rest = (lines.pop() ?? "") + cr;
      lines.forEach(line);
    }
  } finally {
    void reader.cancel().catch(() => {});
  }
}

/**
 * Whether a refused stream is to be opened again, as `path` answers now: yes, unless it is
 * refused with a status of `over` (then `say` tells why on the page). Anything else that refused
 * the stream (a deploy under way, a gateway in between) passes. Once `signal` aborts (the stream's
 * watcher gone), the question is dropped: no.
 */
export function reopenUnless(
  /** @type {string} */ path,
  /** @type {number[]} */ over,
  /** @type {(error: ApiError) => void} */ say,
  /** @type {AbortSignal | undefined} */ signal = undefined,
) {
  return async () => {
    try {
      await api(path, { signal });
      return true;
    } catch (error) {
      if (signal?.aborted) return false;
      if (!(error instanceof ApiError && over.includes(error.status))) return true;
      say(error);
      return false;
    }
  };
}

/** By default: unless the credential is refused. */
const credentialHolds = reopenUnless("/api/v1/tokens/verify", [401, 403], refused);
