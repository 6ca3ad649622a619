/**
 * Who is calling. API keys are configured as the secret API_KEYS, a JSON object mapping the
 * SHA-256 (hex) of each key to its tenant; keys themselves are never stored. With no key
 * configured, only requests to a localhost host are served, as the default tenant.
 */
import type { MiddlewareHandler } from "hono";
import { DEFAULT_TENANT } from "./config";
import { hex, sha256 } from "./digest";
import { ApiError, misconfigured } from "./errors";
import { parseKeys, type KeyEntry } from "./settings";

declare global {
  namespace Cloudflare {
    interface Env {
      /** Secret: `{"<sha256 hex of key>": "<tenant>", ...}` */
      API_KEYS?: string;
    }
  }
}

/**
 * `keyId` names the API key used (a prefix of its hash), null when no keys are configured;
 * `requestId` is the request's id in the logs; `jobId` the job a request acts on, once known.
 */
export type AppEnv = { Bindings: Env; Variables: { tenant: string; keyId: string | null; requestId: string; jobId?: string } };

const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

let parsed: { source: string; entries: KeyEntry[] } | null = null;

/** The configured keys; a malformed setting is a deployment error (answered 503 before this is asked), never an open door. */
export function configuredKeys(env: Env): KeyEntry[] {
  const source = env.API_KEYS ?? "";
  if (parsed?.source === source) return parsed.entries;
  const keys = parseKeys(source);
  if ("problem" in keys) throw misconfigured(keys.problem);
  parsed = { source, entries: keys.entries };
  return keys.entries;
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
