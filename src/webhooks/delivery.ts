/** Sending one webhook: Standard Webhooks headers and signature, no redirects, a bounded wait. */
import { messageOf } from "../errors";
import { retryAfterMs } from "../http/retry-after";

const SEND_TIMEOUT_MS = 10_000;
const MAX_DELAY_MS = 6 * 3600_000;
const encoder = new TextEncoder();

function base64(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

/** `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed by the secret's base64 part. */
export async function sign(secret: string, id: string, timestamp: number, body: string): Promise<string> {
  const raw = Uint8Array.from(atob(secret.replace(/^whsec_/, "")), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(`${id}.${timestamp}.${body}`));
  return `v1,${base64(new Uint8Array(mac))}`;
}

/** An answer's status, and the wait it asks for before the next attempt (`Retry-After`); or the failure to get one. */
export type SendOutcome = { status: number; retryAfterMs?: number } | { error: string };

/** Sends one call, signed with each of the secrets (none: unsigned, as only local development sends). */
export async function sendWebhook(url: string, id: string, body: string, secrets: readonly string[]): Promise<SendOutcome> {
  const timestamp = Math.floor(Date.now() / 1000);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "user-agent": "edge-runs-webhooks/1",
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
  };
  if (secrets.length > 0) headers["webhook-signature"] = (await Promise.all(secrets.map((secret) => sign(secret, id, timestamp, body)))).join(" ");
  try {
    const res = await fetch(url, { method: "POST", headers, body, redirect: "manual", signal: AbortSignal.timeout(SEND_TIMEOUT_MS) });
    await res.body?.cancel();
    return { status: res.status, retryAfterMs: res.ok ? undefined : retryAfterMs(res.headers) };
  } catch (error) {
    return { error: messageOf(error) };
  }
}

/**
 * The wait after a failed attempt: exponential from `baseMs`, ±20% jitter, or longer where the
 * receiver asked for a longer wait (`asked`, its `Retry-After`); at most 6 hours.
 */
export function retryDelay(attempts: number, baseMs: number, asked?: number, random: () => number = Math.random): number {
  const exponential = Math.min(MAX_DELAY_MS, baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.min(MAX_DELAY_MS, Math.max(Math.round(exponential * (0.8 + 0.4 * random())), asked ?? 0));
}
