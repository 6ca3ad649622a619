// @ts-check
/**
 * An event stream that comes back. EventSource reconnects by itself after a dropped connection,
 * but an answer other than a stream closes it for good: a 503 while a deploy is under way, a 429,
 * a gateway's 502. Closed so, it is opened again after a wait (1 s, doubling up to 30 s), after
 * the last event it had (`?after=`: a new EventSource sends no Last-Event-ID), unless what
 * closed it means it is over: the credential refused (asked of `/api/v1/tokens/verify`), or what
 * the caller asks (a run deleted). Then the page says why, and it stays closed.
 */
import { refused } from "./page.js";
import { ApiError, api, eventsUrl } from "./requests.js";

const FIRST_WAIT_MS = 1_000;
const LONGEST_WAIT_MS = 30_000;

/**
 * @typedef {object} Watching
 * @property {(missed: boolean) => void} [open] the stream is open; `missed`: again, with no event had before, so
 *   from now (a feed's changes meanwhile are not in it)
 * @property {(gone: boolean) => void} [down] its connection dropped; then again with `gone` if it was closed for
 *   good and is not to be opened again
 * @property {() => Promise<boolean>} [reopen] asked once it is closed for good: whether to open it again (false once the
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
  /** @type {EventSource} */
  let source;
  /** @type {string | null} */
  let after = null;
  let wait = FIRST_WAIT_MS;
  let timer = 0;
  let closed = false;
  let opened = false;
  const address = () => {
    const asked = new URLSearchParams(query);
    if (after !== null) asked.set("after", after);
    return eventsUrl(path, asked);
  };
  const open = () => {
    source = new EventSource(address());
    source.onopen = () => {
      wait = FIRST_WAIT_MS;
      watching.open?.(opened && after === null);
      opened = true;
    };
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        if (event.lastEventId) after = event.lastEventId;
        handle(event);
      });
    }
    source.onerror = () => {
      if (closed) return;
      watching.down?.(false);
      if (source.readyState !== EventSource.CLOSED) return;
      void (watching.reopen ?? credentialHolds)().then((again) => {
        if (closed) return;
        if (!again) return watching.down?.(true);
        timer = setTimeout(open, wait);
        wait = Math.min(wait * 2, LONGEST_WAIT_MS);
      });
    };
  };
  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      source.close();
    },
  };
}

/**
 * Whether a stream closed for good is to be opened again, as `path` answers now: yes, unless it is
 * refused with a status of `over` (then `say` tells why on the page). Anything else that closed the
 * stream (a deploy under way, a gateway in between) passes. Once `signal` aborts (the stream's
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
