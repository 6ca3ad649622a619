/**
 * Who is calling. API keys are configured as the secret API_KEYS, a JSON object mapping the
 * SHA-256 (hex) of each key to its tenant; keys themselves are never stored. With no key
 * configured, only requests to a localhost host are served, as the default tenant.
 */
import type { MiddlewareHandler } from "hono";
import { DEFAULT_TENANT } from "./config";
import { hex, sha256 } from "./digest";
import { ApiError } from "./errors";

declare global {
  namespace Cloudflare {
    interface Env {
      /** Secret: `{"<sha256 hex of key>": "<tenant>", ...}` */
      API_KEYS?: string;
    }
  }
}

/** `keyId` names the API key used (a prefix of its hash), null when no keys are configured. */
export type AppEnv = { Bindings: Env; Variables: { tenant: string; keyId: string | null } };

const TENANT = /^[A-Za-z0-9_-]{1,64}$/;
const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

interface KeyEntry {
  hash: Uint8Array;
  tenant: string;
}

let parsed: { source: string; entries: KeyEntry[] } | null = null;

/** The configured keys; a malformed setting is a deployment error, never an open door. */
export function configuredKeys(env: Env): KeyEntry[] {
  const source = env.API_KEYS ?? "";
  if (parsed?.source === source) return parsed.entries;
  const entries: KeyEntry[] = [];
  if (source.trim() !== "") {
    const map = JSON.parse(source) as Record<string, unknown>;
    for (const [hash, tenant] of Object.entries(map)) {
      if (!/^[0-9a-f]{64}$/.test(hash) || typeof tenant !== "string" || !TENANT.test(tenant)) {
        throw new Error("API_KEYS must map 64-hex-digit SHA-256 hashes to tenant names of [A-Za-z0-9_-]");
      }
      entries.push({ hash: Uint8Array.from(hash.match(/../g)!.map((h) => parseInt(h, 16))), tenant });
    }
  }
  parsed = { source, entries };
  return entries;
}

/** The key the request presents; both headers with different keys is a conflict, not a choice. */
function presentedKey(headers: Headers): string | null {
  const authorization = headers.get("Authorization");
  const apiKey = headers.get("X-API-Key");
  let bearer: string | null = null;
  if (authorization !== null) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    bearer = match ? match[1] : "";
  }
  if (bearer !== null && apiKey !== null && bearer !== apiKey) {
    throw new ApiError("bad_request", "Authorization and X-API-Key name different keys: send one");
  }
  return bearer ?? apiKey;
}

/** The entry whose hash is this key's hash; every entry is compared, in constant time. */
async function entryFor(key: string, entries: KeyEntry[]): Promise<KeyEntry | null> {
  const hash = await sha256(key);
  let found: KeyEntry | null = null;
  for (const entry of entries) {
    if (crypto.subtle.timingSafeEqual(hash, entry.hash)) found = entry;
  }
  return found;
}


const unauthorized = (detail: string) => new ApiError("unauthorized", detail, {}, { "WWW-Authenticate": "Bearer" });

export function tenancy(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const entries = configuredKeys(c.env);
    if (entries.length === 0) {
      if (!LOCAL_HOSTS.has(new URL(c.req.url).hostname)) {
        throw unauthorized("An API key is required for non-localhost access");
      }
      c.set("tenant", DEFAULT_TENANT);
      c.set("keyId", null);
      return next();
    }
    const key = presentedKey(c.req.raw.headers);
    const entry = key ? await entryFor(key, entries) : null;
    if (entry === null) throw unauthorized("Unauthorized");
    c.set("tenant", entry.tenant);
    c.set("keyId", hex(entry.hash).slice(0, 16));
    return next();
  };
}
