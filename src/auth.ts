/**
 * Who is calling. API keys are configured as the secret API_KEYS, a JSON object mapping the
 * SHA-256 (hex) of each key to its tenant; keys themselves are never stored. With no key
 * configured, only requests to a localhost host are served, as the default tenant. A scoped
 * token (src/tokens.ts) acts for the tenant of the key that minted it, within its scopes and reach.
 */
import type { MiddlewareHandler } from "hono";
import { DEFAULT_TENANT, rotatingSecrets } from "./config";
import { sha256 } from "./digest";
import { ApiError, misconfigured } from "./errors";
import { parseKeys, type KeyEntry } from "./settings";
import type { Scope } from "./schemas";
import { DEVELOPMENT_SECRET, keyIdOf, TOKEN_PREFIX, verifyToken, type Grant } from "./tokens";

declare global {
  namespace Cloudflare {
    interface Env {
      /** Secret: `{"<sha256 hex of key>": "<tenant>", ...}` */
      API_KEYS?: string;
    }
  }
}

/**
 * `keyId` names the API key used, or the one that minted the token used (a prefix of its hash),
 * null when no keys are configured; `token` is what a scoped token grants, null for a key;
 * `requestId` is the request's id in the logs; `jobId` the job a request acts on, once known.
 * Read each with `c.get(name)`: Hono's `c.var` copies every variable into a new object per read.
 */
export type AppEnv = {
  Bindings: Env;
  Variables: { tenant: string; keyId: string | null; token: Grant | null; requestId: string; jobId?: string };
};

/**
 * The secrets of tokens, the first signing new ones and each verifying: TOKEN_SECRET, and while it
 * is rotated the one before it (its tokens stay good until they expire). In local development (no
 * keys) without it, a development secret; null where a deployment with keys has none (no tokens then).
 */
export function tokenSecrets(env: Env, keysConfigured: boolean): [string, ...string[]] | null {
  // A previous secret without a current one is a bad setting, answered 503 before tokens are read.
  const [secret, ...previous] = rotatingSecrets(env, "TOKEN_SECRET");
  if (secret !== undefined) return [secret, ...previous];
  return keysConfigured ? null : [DEVELOPMENT_SECRET];
}

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

/** The key or token the request presents; both headers with different values is a conflict, not a choice. */
function presentedCredential(headers: Headers): string | null {
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

/** The two routes a browser's EventSource opens, which cannot carry headers: only they take `?token=`. */
const TOKEN_IN_QUERY = /^\/api\/v1\/runs\/(events|[^/]+\/stream)$/;

/**
 * A token in the query, where one is allowed (a GET of those routes, or its HEAD, which answers the
 * same headers); refused anywhere else, so that tokens stay out of other URLs.
 */
function queryToken(url: URL, method: string): string | null {
  const token = url.searchParams.get("token");
  if (token === null) return null;
  if ((method !== "GET" && method !== "HEAD") || !TOKEN_IN_QUERY.test(url.pathname)) {
    throw new ApiError("bad_request", "?token= is accepted only by GET /api/v1/runs/{id}/stream and /api/v1/runs/events; send Authorization: Bearer <token>");
  }
  return token;
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
    const url = new URL(c.req.url);
    const inQuery = queryToken(url, c.req.method);
    const presented = presentedCredential(c.req.raw.headers);
    if (inQuery !== null && presented !== null && presented !== inQuery) {
      throw new ApiError("bad_request", "?token= and the Authorization header name different credentials: send one");
    }
    const credential = presented ?? inQuery;
    c.set("token", null);
    if (entries.length === 0 && !LOCAL_HOSTS.has(url.hostname)) {
      throw unauthorized("An API key is required for non-localhost access");
    }
    // A key is tried first: an API key may look like a token, a token never matches a key's hash.
    const entry = credential && entries.length > 0 ? await entryFor(credential, entries) : null;
    if (entry !== null) {
      c.set("tenant", entry.tenant);
      c.set("keyId", keyIdOf(entry));
      return next();
    }
    if (credential?.startsWith(TOKEN_PREFIX)) {
      const secrets = tokenSecrets(c.env, entries.length > 0);
      const verified = secrets === null ? ({ ok: false, why: "unauthorized" } as const) : await verifyToken(credential, secrets, entries, Date.now());
      if (!verified.ok) throw unauthorized(verified.why === "expired" ? "Token expired" : "Unauthorized");
      c.set("tenant", verified.grant.tenant);
      c.set("keyId", verified.grant.key || null);
      c.set("token", verified.grant);
      return next();
    }
    if (entries.length > 0) throw unauthorized("Unauthorized");
    c.set("tenant", DEFAULT_TENANT);
    c.set("keyId", null);
    return next();
  };
}

/** Middleware for what only a key may do (stats, bulk operations, minting tokens). */
export function keyOnly(what: string): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (c.get("token") !== null) throw new ApiError("forbidden", `Token does not allow ${what}`);
    await next();
  };
}

/** Middleware: the scope a token needs for this route (403 naming it without); a key may do everything. */
export function scope(needed: Scope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const grant = c.get("token");
    if (grant !== null && !grant.scopes.includes(needed)) throw new ApiError("forbidden", `Token does not allow ${needed}`);
    await next();
  };
}
