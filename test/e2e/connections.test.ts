/**
 * The black-box tests' client against the server's idle connections (test/e2e/keep-alive.ts): a
 * POST after a pause is answered, never lost on a connection the server has closed.
 */
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEEP_ALIVE_MS } from "./keep-alive";
import { BASE, PORT, startServer, stopServer, type DevServer } from "./server";

let server: DevServer;
/** How long the server keeps a connection open after answering on it. */
let serverIdleMs: number;
beforeAll(async () => {
  server = await startServer();
  // Its requests to /health would reuse the idle connection and keep it fresh.
  clearInterval(server.nudger);
  serverIdleMs = await idleUntilClosed();
});
afterAll(async () => {
  if (server) await stopServer(server);
});

/** How long the server keeps a connection open after answering on it, measured on a raw socket. */
function idleUntilClosed(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(PORT, "127.0.0.1");
    let answered = 0;
    socket.on("data", () => (answered = Date.now()));
    socket.on("end", () => resolve(Date.now() - answered));
    socket.on("error", reject);
    socket.write(`GET /health HTTP/1.1\r\nhost: 127.0.0.1:${PORT}\r\nconnection: keep-alive\r\n\r\n`);
  });
}

/** Keeps the event loop busy, as hashing a large output on a loaded machine does: no timer runs. */
function busy(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until);
}

describe("a connection left idle", () => {
  it("is closed by the server later than the tests' client lets it go", () => {
    expect(serverIdleMs).toBeGreaterThan(KEEP_ALIVE_MS + 2000);
  });

  it("is not used for a POST after the server closed it, even when the client's timers ran late", async () => {
    const first = await fetch(`${BASE}/api/v1/runs`);
    expect(first.status).toBe(200);
    await first.arrayBuffer();
    const answered = Date.now();
    // Timers run for a while (long enough for the client to let the connection go), then none
    // do until the server has closed it: the client learns of the close only when it next looks.
    await new Promise((r) => setTimeout(r, KEEP_ALIVE_MS + 1000));
    busy(answered + serverIdleMs + 200 - Date.now());
    const res = await fetch(`${BASE}/api/v1/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "after a pause", config: { simulate: { steps: 1, step_ms: 1 } } }),
    });
    expect(res.status).toBe(202);
    const { job_id } = (await res.json()) as { job_id: string };
    expect((await fetch(`${BASE}/api/v1/runs/${job_id}`)).status).toBe(200);
  });
});
