/**
 * A real HTTP proxy in front of `wrangler dev` that hands on the responses of one path (or of the
 * paths a pattern matches) a while late: each chunk as it came, in order, `lagMs` after it came.
 * Every other request goes straight through. A page opened through it sees the service as a
 * browser behind a slow link does, e.g. the tenant's feed a few seconds behind a run's own stream,
 * or the reply to its answer coming after the run's stream told what followed it.
 */
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface LaggingProxy {
  base: string;
  close(): Promise<void>;
}

export async function startLaggingProxy(target: string, path: string | RegExp, lagMs: number): Promise<LaggingProxy> {
  const to = new URL(target);
  const server: Server = createServer((incoming, outgoing) => {
    const pathname = new URL(incoming.url ?? "/", to).pathname;
    const lags = typeof path === "string" ? pathname === path : path.test(pathname);
    const upstream = request(
      { host: to.hostname, port: to.port, path: incoming.url, method: incoming.method, headers: { ...incoming.headers, host: to.host } },
      (answer) => {
        // The head at once (an EventSource opens on it); the body late.
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        outgoing.flushHeaders();
        const later = (hand: () => void) => (lags ? setTimeout(() => outgoing.destroyed || hand(), lagMs) : hand());
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
