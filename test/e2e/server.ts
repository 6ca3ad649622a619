/** Starts and stops a real `wrangler dev` for black-box tests. */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
// Node's fetch lets an idle connection go before the server closes it (keep-alive.ts says why).
import "./keep-alive";

export const PORT = 8005;
export const BASE = `http://127.0.0.1:${PORT}`;

export interface DevServer {
  process: ChildProcess;
  persistTo: string;
  output: string[];
  base: string;
  nudger?: ReturnType<typeof setInterval>;
}

/**
 * wrangler dev's proxy (4.86) forwards each request to the Worker's own workerd over pooled
 * connections. When a forward fails (a pooled connection closed under it), a GET is put back in
 * a retry queue that only the proxy's next incoming request drains: on a quiet moment, the GET
 * waits until some other request arrives, however long that is. A request to /health every
 * second is that next request, so a GET caught this way waits at most a second, as it would in a
 * busy development session. (The proxy compares the failed request's whole URL with the
 * Worker's bare origin, which never match, so it never reports the failure.)
 */
function nudge(server: DevServer): void {
  server.nudger = setInterval(() => {
    fetch(`${server.base}/health`).then((r) => r.body?.cancel(), () => {});
  }, 1000);
  server.nudger.unref();
}

/** `wrangler dev` of the service (or, with `--config`, of another Worker on another `port`). */
export async function startServer(persistTo = mkdtempSync(join(tmpdir(), "runs-e2e-")), args: string[] = [], port = PORT): Promise<DevServer> {
  const base = `http://127.0.0.1:${port}`;
  const child = spawn(
    "node_modules/.bin/wrangler",
    ["dev", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", persistTo, ...(args.includes("--log-level") ? [] : ["--log-level", "warn"]), ...args],
    {
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", CI: "true" },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so that a hard kill can take workerd down with it.
      detached: true,
    },
  );
  const server: DevServer = { process: child, persistTo, output: [], base };
  child.stdout!.on("data", (d) => server.output.push(String(d)));
  child.stderr!.on("data", (d) => server.output.push(String(d)));
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited: ${server.output.join("")}`);
    try {
      if ((await fetch(`${base}/health`)).ok) {
        nudge(server);
        return server;
      }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  await stopServer(server);
  throw new Error(`wrangler dev did not come up: ${server.output.join("")}`);
}

/** Kills wrangler and workerd at once, as a crash or a power cut would. */
export async function killServer(server: DevServer): Promise<void> {
  clearInterval(server.nudger);
  const exited = new Promise((resolve) => server.process.once("exit", resolve));
  process.kill(-server.process.pid!, "SIGKILL");
  await exited;
  await portFree(server.base);
}

async function portFree(base: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(`${base}/health`);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${base} still answers after the server stopped`);
}

/** Stops the server by its PID and waits until the port is free again. */
export async function stopServer(server: DevServer): Promise<void> {
  clearInterval(server.nudger);
  const { process: child } = server;
  if (child.exitCode === null) {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const killed = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killed);
  }
  // Whatever wrangler left of its group (a workerd still serving open streams) goes with it.
  try {
    process.kill(-child.pid!, "SIGKILL");
  } catch {
    // the group is gone already
  }
  await portFree(server.base);
}
