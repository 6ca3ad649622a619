/**
 * A real local webhook receiver, started by vitest (globalSetup, in Node). It checks every
 * Standard Webhooks signature itself, answers by scenario (/hooks/<scenario>/<token>; `stall`
 * never answers; `held` answers 200 once the test releases it with POST /_release/<token>) and
 * serves what it received at GET /_deliveries.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { loopbackServer } from "../local-server";
import { RECEIVER_PORT, WEBHOOK_SECRET, WEBHOOK_SECRET_PREVIOUS, type Delivery } from "./protocol";

const deliveries: Delivery[] = [];
/** The `held` calls not answered yet, by token: each answers when released. */
const held = new Map<string, Array<() => void>>();

/** Standard Webhooks' check: one of the header's space-separated signatures is the secret's. */
function verify(secret: string, id: string | undefined, timestamp: string | undefined, body: string, header: string | undefined): boolean {
  if (!id || !timestamp || !header) return false;
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest();
  return header.split(" ").some((part) => {
    const [version, signature] = part.split(",");
    const given = Buffer.from(signature ?? "", "base64");
    return version === "v1" && given.length === expected.length && timingSafeEqual(given, expected);
  });
}

function answer(scenario: string, earlier: number): number {
  switch (scenario) {
    case "ok":
    case "held":
      return 200;
    case "flaky":
      return earlier < 2 ? 500 : 204;
    case "busy":
      return earlier < 1 ? 429 : 204;
    case "gone":
      return 410;
    case "redirect":
      return 302;
    default:
      return 500;
  }
}

async function handle(req: IncomingMessage, res: ServerResponse) {
  if (req.method === "GET" && req.url === "/_deliveries") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(deliveries));
  }
  if (req.method === "POST" && req.url?.startsWith("/_release/")) {
    const token = req.url.slice("/_release/".length);
    const waiting = held.get(token) ?? [];
    held.delete(token);
    for (const release of waiting) release();
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({ released: waiting.length }));
  }
  const [, , scenario = "", token = ""] = (req.url ?? "").split("/");
  let body = "";
  for await (const part of req) body += part;
  const id = req.headers["webhook-id"] as string | undefined;
  const timestamp = req.headers["webhook-timestamp"] as string | undefined;
  const signature = req.headers["webhook-signature"] as string | undefined;
  const earlier = deliveries.filter((d) => d.token === token).length;
  if (scenario === "stall") {
    // Never answers: the sender gives up after its own timeout.
    deliveries.push({ scenario, token, id: id ?? null, timestamp: timestamp ?? null, signature: signature ?? null, verified: false, verifiedWithPrevious: false, body: JSON.parse(body), answered: 0, at: Date.now() });
    return;
  }
  const status = answer(scenario, earlier);
  const delivery: Delivery = {
    scenario,
    token,
    id: id ?? null,
    timestamp: timestamp ?? null,
    signature: signature ?? null,
    verified: verify(WEBHOOK_SECRET, id, timestamp, body, signature),
    verifiedWithPrevious: verify(WEBHOOK_SECRET_PREVIOUS, id, timestamp, body, signature),
    body: JSON.parse(body),
    answered: scenario === "held" ? 0 : status,
    at: Date.now(),
  };
  deliveries.push(delivery);
  if (scenario === "held") {
    await new Promise<void>((release) => held.set(token, [...(held.get(token) ?? []), release]));
    delivery.answered = status;
  }
  // A busy receiver asks for a second's wait, as a rate limit's answer does.
  const headers: Record<string, string> = status === 302 ? { location: `/hooks/ok/${token}-redirected` } : status === 429 ? { "retry-after": "1" } : {};
  res.writeHead(status, headers);
  res.end();
}

export const { setup, teardown } = loopbackServer(RECEIVER_PORT, handle);
