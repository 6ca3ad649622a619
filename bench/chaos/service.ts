/**
 * The chaos run's service and how its clients reach it: `wrangler dev`, killed and restarted on
 * the same state; requests as a tenant, sent again until answered where a client would; and the
 * receiver of the jobs' webhooks, which fails one delivery in ten.
 */
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killServer, startServer, stopServer, type DevServer } from "../../test/e2e/server";
import { LINE_SHARDS, PORT, PROJECTION_SHARDS, apiKeys, chance, keys, problem, sleep, tally, type Tenant } from "./world";

// ---- the webhook receiver --------------------------------------------------------------------

/** Every delivery the receiver took, with the lineage its URL names (`hookUrl`). */
export const hooks: { job_id: string; status: string; event?: string; lineage: string | null }[] = [];
const receiver = createServer((req: IncomingMessage, res) => {
  let body = "";
  req.on("data", (d) => (body += d));
  req.on("end", () => {
    // One delivery in ten fails, so that retries across kills are exercised too.
    if (chance(0.1)) return res.writeHead(500).end();
    try {
      hooks.push({ ...JSON.parse(body), lineage: new URL(req.url ?? "/", "http://receiver").searchParams.get("lineage") });
    } catch {
      problem(`a webhook body that is not JSON: ${body.slice(0, 200)}`);
    }
    res.writeHead(200).end();
  });
});

/** Starts the receiver, on a port of its own each run, so that no other server's jobs call back here. */
export async function listenForHooks(): Promise<void> {
  await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
}
/** The receiver's URL for a job's webhook, naming its lineage (`Job.lineage`), which a retry's job keeps. */
export const hookUrl = (lineage: string) => `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook?lineage=${encodeURIComponent(lineage)}`;
export const closeHooks = () => receiver.close();

// ---- the server, killed and restarted ---------------------------------------------------------

export const persistTo = mkdtempSync(join(tmpdir(), "runs-chaos-"));
const args = [
  ...["--log-level", "log"],
  ...["--inspector-port", String(PORT + 1316)],
  ...["--var", `API_KEYS:${apiKeys}`],
  ...["--var", "WEBHOOK_ALLOW_PRIVATE:true", "--var", "WEBHOOK_RETRY_BASE_MS:1000", "--var", `WEBHOOK_SECRET:whsec_${Buffer.from("chaos-webhook-secret-32-bytes!!!").toString("base64")}`],
  ...["--var", "RETRY_BASE_MS:500", "--var", "MAX_RUNNING_PER_TENANT:4", "--var", "MAX_RUNNING_PER_KEY:1"],
  ...["--var", "TOKEN_SECRET:chaos-token-secret-of-32-characters"],
  ...["--var", `PROJECTION_SHARDS:${PROJECTION_SHARDS}`, "--var", `LINE_SHARDS:${LINE_SHARDS}`],
];
let server: DevServer;
/**
 * The server as its clients find it: its address, whether it is up, when it last started (slots
 * granted before it are asked about by a minute after) and when it was last killed.
 */
export const service = { base: "", up: false, startedAt: 0, lastKillAt: 0 };
/** What the server printed, each run of it. */
export const logs: string[] = [];

export async function start() {
  server = await startServer(persistTo, args, PORT);
  service.base = server.base;
  service.startedAt = Date.now();
  service.up = true;
}
export async function kill() {
  service.up = false;
  service.lastKillAt = Date.now();
  await killServer(server);
  logs.push(...server.output);
  tally.kills++;
}
export async function stop() {
  service.up = false;
  await stopServer(server);
  logs.push(...server.output);
}

// ---- requests ---------------------------------------------------------------------------------

/** Requests that went unanswered, by why. */
export const unheard: Record<string, number> = {};
export type Answer = { status: number; json: any } | null;
let keyTurn = 0;

/** One request as the tenant; null when it went unanswered (server down, the proxy's 503, a 429, the service's 503). */
export async function call(tenant: Tenant, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  if (!service.up) return null;
  const tenantKeys = keys.get(tenant)!;
  try {
    const res = await fetch(`${service.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${tenantKeys[keyTurn++ % tenantKeys.length]}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (res.status === 429 || res.status === 503) {
      const reason = `${res.status} ${text.slice(0, 80)}`;
      unheard[reason] = (unheard[reason] ?? 0) + 1;
      return null;
    }
    if (res.status >= 500) {
      tally.s5xx++;
      problem(`${method} ${path} → ${res.status} ${text.slice(0, 300)}`);
    }
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: res.status, json };
  } catch (error) {
    const reason = String((error as Error).cause ?? error).slice(0, 40);
    unheard[reason] = (unheard[reason] ?? 0) + 1;
    return null;
  }
}

/**
 * Sends until answered, as a client whose request was lost would (safe for keyed submits and retries,
 * deletes, reads); `unanswered` counts the sends before the answer.
 */
export async function until(tenant: Tenant, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; json: any; unanswered: number }> {
  for (let unanswered = 0; ; unanswered++) {
    const answer = await call(tenant, method, path, body, headers);
    if (answer) return { ...answer, unanswered };
    tally.unanswered++;
    await sleep(300);
  }
}

/** Hands each block of an event stream (an event or a ping) to `take` as it arrives, until the stream ends. */
export async function eachEvent(body: NonNullable<Response["body"]>, take: (block: string) => void): Promise<void> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    buffer += read.value;
    for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
      take(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
    }
  }
}
