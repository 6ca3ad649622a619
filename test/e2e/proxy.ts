/**
 * A real HTTP proxy in front of `wrangler dev`, for a page or a client that sees the service as
 * one behind a slow link, a gateway or a deploy does. It may hand on the responses of one path (or of the paths
 * a pattern matches) a while late: each chunk as it came, in order, `lag.ms` after it came (e.g. the
 * tenant's feed a few seconds behind a run's own stream, or the reply to its answer coming after
 * the run's stream told what followed it). It may answer some requests itself, as a gateway that
 * cannot reach the service does (`answer`: its status, content type, body and headers, or undefined to
 * hand the request on), or hold them with no answer at all ("hold"). It may write event streams
 * back another way (`rewrite`), as a gateway that relays them its own way does. Every other request
 * goes straight through, and may be cut or stalled while under way.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface Proxy {
  base: string;
  /** Cuts the connections of the requests under way whose path `path` matches, as a deploy or a network fault does. */
  cut(path: RegExp): void;
  /**
   * Hands on nothing more of the requests under way whose path `path` matches (and, `later`, of
   * those sent from now on, once their head is sent), and keeps their connections open: to each
   * side, a connection that died with neither told (a phone that changed networks, a NAT that
   * forgot it) looks so.
   */
  stall(path: RegExp, later?: boolean): void;
  close(): Promise<void>;
}

export interface ProxyOptions {
  lag?: { path: string | RegExp; ms: number };
  answer?: (method: string, pathname: string) => { status: number; type: string; body: string; headers?: Record<string, string> } | "hold" | undefined;
  /** Event streams written back block by block, each block (`n`: its place in its stream) as the writes this makes of it, a moment apart. */
  rewrite?: (block: string, n: number) => string[];
}

export async function startProxy(target: string, { lag, answer: answers, rewrite }: ProxyOptions): Promise<Proxy> {
  const to = new URL(target);
  const underWay = new Map<ServerResponse, string>();
  /** The requests that get nothing more handed on, and the paths of those sent later that will not. */
  const stalled = new Set<ServerResponse>();
  let stalling: RegExp | null = null;
  const server: Server = createServer((incoming, outgoing) => {
    const pathname = new URL(incoming.url ?? "/", to).pathname;
    underWay.set(outgoing, pathname);
    if (stalling?.test(pathname)) stalled.add(outgoing);
    outgoing.on("close", () => {
      underWay.delete(outgoing);
      stalled.delete(outgoing);
    });
    const own = answers?.(incoming.method ?? "GET", pathname);
    if (own === "hold") return void incoming.resume();
    if (own) {
      incoming.resume();
      outgoing.writeHead(own.status, { ...own.headers, "Content-Type": own.type }).end(own.body);
      return;
    }
    const lags = lag !== undefined && (typeof lag.path === "string" ? pathname === lag.path : lag.path.test(pathname));
    const upstream = request(
      { host: to.hostname, port: to.port, path: incoming.url, method: incoming.method, headers: { ...incoming.headers, host: to.host } },
      (answer) => {
        // The head at once (an EventSource opens on it); the body late.
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        outgoing.flushHeaders();
        if (rewrite && /^text\/event-stream/.test(String(answer.headers["content-type"]))) return void relayRewritten(answer, outgoing, rewrite);
        const later = (hand: () => void) => (lags ? setTimeout(() => outgoing.destroyed || hand(), lag?.ms) : hand());
        answer.on("data", (chunk: Buffer) => stalled.has(outgoing) || later(() => outgoing.write(chunk)));
        answer.on("end", () => stalled.has(outgoing) || later(() => outgoing.end()));
      },
    );
    upstream.on("error", () => outgoing.destroy());
    // The browser went away (a page closed, an EventSource closed): so does the request upstream.
    outgoing.on("close", () => upstream.destroy());
    incoming.pipe(upstream);
  });
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut: (path) => {
      for (const [outgoing, pathname] of underWay) if (path.test(pathname)) outgoing.destroy();
    },
    stall: (path, later = false) => {
      for (const [outgoing, pathname] of underWay) if (path.test(pathname)) stalled.add(outgoing);
      if (later) stalling = path;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise((closed) => server.close(() => closed()));
    },
  };
}

/** An event stream handed on block by block, each as the writes `rewrite` makes of it; what follows the last block as it came. */
async function relayRewritten(answer: IncomingMessage, outgoing: ServerResponse, rewrite: (block: string, n: number) => string[]): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = "";
  let n = 0;
  try {
    for await (const chunk of answer) {
      buffer += decoder.decode(chunk as Buffer, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const writes = rewrite(buffer.slice(0, end), n++);
        buffer = buffer.slice(end + 2);
        for (const [i, write] of writes.entries()) {
          if (i > 0) await new Promise((passed) => setTimeout(passed, 2));
          outgoing.write(write);
        }
      }
    }
    outgoing.end(buffer);
  } catch {
    outgoing.destroy();
  }
}

/** What the service answers while a deploy is under way (src/app.ts), as a test plays it: 503 with this body and `Retry-After: 1`. */
export const DEPLOYING_BODY = JSON.stringify({ detail: "Service is being updated; retry shortly" });

/** The service's event streams: the tenant's feed and each job's stream. */
export const EVENT_STREAMS = /^\/api\/v1\/runs\/(events|run_[\w-]+\/stream)$/;

/**
 * A proxy through which a deploy can be played: `deploy()` cuts the requests under way that `paths`
 * matches, and answers every later one 503 as the service does while a deploy is under way, until
 * `done()`; `refused` lists the path of each request so answered.
 */
export async function startDeployingProxy(target: string, paths = EVENT_STREAMS) {
  let deploying = false;
  const refused: string[] = [];
  const proxy = await startProxy(target, {
    answer: (_method, pathname) => {
      if (!deploying || !paths.test(pathname)) return undefined;
      refused.push(pathname);
      return { status: 503, type: "application/json", body: DEPLOYING_BODY, headers: { "Retry-After": "1" } };
    },
  });
  return {
    ...proxy,
    refused,
    deploy() {
      deploying = true;
      proxy.cut(paths);
    },
    done() {
      deploying = false;
    },
  };
}
