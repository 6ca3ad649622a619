/**
 * Node's `fetch` keeps an idle connection to the server for 2 s instead of its 4: loaded with
 * server.ts, so for every black-box test and benchmark that talks to `wrangler dev`.
 *
 * `wrangler dev` closes a connection left idle for 5 s, and says nothing of it in its answers
 * (no `Keep-Alive: timeout=`). Node's fetch (undici) keeps an idle connection for 4 s by a timer of
 * about a second's resolution, so it can still hand a connection idle for nearly 5 s to the
 * next request, just as the server closes it. The request then fails with "other side closed"
 * (as a POST of a retry did, after a hash of 100 MiB that took some seconds).
 * At 2 s the connection is let go well before the server's 5. The service's own client
 * (client/index.ts) sends again what it may: it needs none of this.
 */
const GLOBAL_DISPATCHER = Symbol.for("undici.globalDispatcher.1");
/** How long Node's fetch keeps an idle connection here. */
export const KEEP_ALIVE_MS = 2000;

type Dispatcher = { constructor: new (options: { keepAliveTimeout: number }) => unknown; close(): Promise<void> };
const slots = globalThis as unknown as Record<symbol, Dispatcher | undefined>;

// Node makes its dispatcher when fetch is first used; a data: URL touches no network.
await (await fetch("data:,")).arrayBuffer();
const current = slots[GLOBAL_DISPATCHER];
if (!current) throw new Error("Node's fetch has no global dispatcher to replace");
// Node's own Agent class (Node ships undici inside; it exports no Agent of its own).
slots[GLOBAL_DISPATCHER] = new current.constructor({ keepAliveTimeout: KEEP_ALIVE_MS }) as Dispatcher;
await current.close();
