/**
 * A real HTTP proxy in front of `wrangler dev`, for a page that sees the service as a browser
 * behind a slow link or a gateway does. It may hand on the responses of one path (or of the paths
 * a pattern matches) a while late: each chunk as it came, in order, `lag.ms` after it came (e.g. the
 * tenant's feed a few seconds behind a run's own stream, or the reply to its answer coming after
 * the run's stream told what followed it). It may answer some requests itself, as a gateway that
 * cannot reach the service does (`answer`: its status, content type and body, or undefined to
 * hand the request on). Every other request goes straight through.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface Proxy {
  base: string;
  close(): Promise<void>;
}

export interface ProxyOptions {
  lag?: { path: string | RegExp; ms: number };
  answer?: (method: string, pathname: string) => { status: number; type: string; body: string } | undefined;
}

export async function startProxy(target: string, { lag, answer: answers }: ProxyOptions): Promise<Proxy> {
  const to = new URL(target);
  const server: Server = createServer((incoming, outgoing) => {
    const pathname = new URL(incoming.url ?? "/", to).pathname;
    const own = answers?.(incoming.method ?? "GET", pathname);
    if (own) {
      incoming.resume();
      outgoing.writeHead(own.status, { "Content-Type": own.type }).end(own.body);
      return;
    }
    const lags = lag !== undefined && (typeof lag.path === "string" ? pathname === lag.path : lag.path.test(pathname));
    const upstream = request(
      { host: to.hostname, port: to.port, path: incoming.url, method: incoming.method, headers: { ...incoming.headers, host: to.host } },
      (answer) => {
        // The head at once (an EventSource opens on it); the body late.
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        outgoing.flushHeaders();
        const later = (hand: () => void) => (lags ? setTimeout(() => outgoing.destroyed || hand(), lag?.ms) : hand());
        answer.on("data", (chunk: Buffer) => later(() => outgoing.write(chunk)));
        answer.on("end", () => later(() => outgoing.end()));
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
    close: () => {
      server.closeAllConnections();
      return new Promise((closed) => server.close(() => closed()));
    },
  };
}
