/**
 * Scoped tokens for browsers: self-contained, HMAC-SHA256-signed with TOKEN_SECRET, naming the
 * tenant and the key that minted them, what they may do (scopes) and which jobs they reach.
 * Verifying one reads no storage; only a token's submits are counted (in the tenant's projection).
 */
import { hex } from "./digest";
import { SCOPES, type Scope, type TokenConfig } from "./schemas";
import type { KeyEntry } from "./settings";

/** Every token starts so; an API key that happens to is still tried as a key first. */
export const TOKEN_PREFIX = "ert_";

/** The secret of local development (no API keys, no TOKEN_SECRET): such tokens only ever reach a localhost tenant. */
export const DEVELOPMENT_SECRET = "edge-runs local development: not a secret";

/** What a token grants, as signed. */
export interface Grant {
  /** The token's own id: its submits are counted under it. */
  id: string;
  tenant: string;
  /** The minting key's id (a prefix of its hash); "" when minted without keys (local development). */
  key: string;
  scopes: Scope[];
  runs: string[] | null;
  session_id: string | null;
  tags: string[] | null;
  /** Seconds since the epoch. */
  expires: number;
  max_submits: number | null;
  /** The concurrency key and priority of the jobs the token submits (null: none, and the default). */
  concurrency_key: string | null;
  priority: number | null;
  /** Model settings the jobs it submits run with, over the body's config. */
  config: TokenConfig | null;
  /** The agent the jobs it submits run, as a job's agent_id names it (`file:…`, `recipe:…`), whatever the body names. */
  agent: string | null;
  /** Metadata entries the jobs it submits carry, over the body's. */
  metadata: Record<string, string> | null;
}

/** The id of an API key in logs, rate limits and tokens: the first 16 hex digits of its hash. */
export const keyIdOf = (entry: KeyEntry) => hex(entry.hash).slice(0, 16);

const encoder = new TextEncoder();

function base64url(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The bytes of base64url text, or null unless it is the one canonical spelling of them. */
function fromBase64url(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (ch) => ch.charCodeAt(0));
  } catch {
    return null;
  }
  return base64url(bytes) === text ? bytes : null;
}

/** The imported keys of the secrets in use: the current one, and the one before it while it is rotated. */
const signingKeys = new Map<string, Promise<CryptoKey>>();

function signingKey(secret: string): Promise<CryptoKey> {
  let key = signingKeys.get(secret);
  if (key === undefined) {
    if (signingKeys.size >= 4) signingKeys.clear();
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    signingKeys.set(secret, key);
  }
  return key;
}

/** The compact signed form of a grant. */
interface Payload {
  i: string;
  t: string;
  k: string;
  s: Scope[];
  r?: string[];
  ss?: string;
  g?: string[];
  e: number;
  m?: number;
  ck?: string;
  p?: number;
  cf?: TokenConfig;
  a?: string;
  md?: Record<string, string>;
}

export async function mintToken(grant: Grant, secret: string): Promise<string> {
  const payload: Payload = { i: grant.id, t: grant.tenant, k: grant.key, s: grant.scopes, e: grant.expires };
  if (grant.runs) payload.r = grant.runs;
  if (grant.session_id !== null) payload.ss = grant.session_id;
  if (grant.tags) payload.g = grant.tags;
  if (grant.max_submits !== null) payload.m = grant.max_submits;
  if (grant.concurrency_key !== null) payload.ck = grant.concurrency_key;
  if (grant.priority !== null) payload.p = grant.priority;
  if (grant.config !== null) payload.cf = grant.config;
  if (grant.agent !== null) payload.a = grant.agent;
  if (grant.metadata !== null) payload.md = grant.metadata;
  const body = TOKEN_PREFIX + base64url(encoder.encode(JSON.stringify(payload)));
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", await signingKey(secret), encoder.encode(body)));
  return `${body}.${base64url(signature)}`;
}

export type Verified = { ok: true; grant: Grant } | { ok: false; why: "unauthorized" | "expired" };

/**
 * The grant a token carries, if its signature holds under one of the secrets, the key that minted
 * it is still configured for its tenant (removing the key revokes its tokens), and it has not expired.
 */
export async function verifyToken(token: string, secrets: readonly string[], keys: KeyEntry[], nowMs: number): Promise<Verified> {
  const dot = token.lastIndexOf(".");
  const body = token.slice(0, dot);
  const signature = dot > 0 ? fromBase64url(token.slice(dot + 1)) : null;
  if (!token.startsWith(TOKEN_PREFIX) || signature === null) return { ok: false, why: "unauthorized" };
  let signed = false;
  for (const secret of secrets) {
    signed ||= await crypto.subtle.verify("HMAC", await signingKey(secret), signature, encoder.encode(body));
  }
  // The signature is checked before anything inside is believed.
  if (!signed) return { ok: false, why: "unauthorized" };
  const grant = grantOf(fromBase64url(body.slice(TOKEN_PREFIX.length)));
  if (grant === null) return { ok: false, why: "unauthorized" };
  const minted = keys.length === 0 ? grant.key === "" : keys.some((entry) => entry.tenant === grant.tenant && keyIdOf(entry) === grant.key);
  if (!minted) return { ok: false, why: "unauthorized" };
  if (grant.expires * 1000 <= nowMs) return { ok: false, why: "expired" };
  return { ok: true, grant };
}

function grantOf(bytes: Uint8Array | null): Grant | null {
  if (bytes === null) return null;
  let p: Payload;
  try {
    p = JSON.parse(new TextDecoder().decode(bytes)) as Payload;
  } catch {
    return null;
  }
  if (typeof p !== "object" || p === null || typeof p.t !== "string" || typeof p.k !== "string" || !Array.isArray(p.s) || typeof p.e !== "number") return null;
  return {
    id: String(p.i),
    tenant: p.t,
    key: p.k,
    scopes: p.s.filter((s): s is Scope => (SCOPES as readonly string[]).includes(s)),
    runs: Array.isArray(p.r) ? p.r.map(String) : null,
    session_id: typeof p.ss === "string" ? p.ss : null,
    tags: Array.isArray(p.g) ? p.g.map(String) : null,
    expires: p.e,
    max_submits: typeof p.m === "number" ? p.m : null,
    concurrency_key: typeof p.ck === "string" ? p.ck : null,
    priority: typeof p.p === "number" ? p.p : null,
    config: typeof p.cf === "object" && p.cf !== null && !Array.isArray(p.cf) ? p.cf : null,
    agent: typeof p.a === "string" ? p.a : null,
    metadata: isEntries(p.md) ? p.md : null,
  };
}

/** Metadata entries as signed: an object of strings. */
const isEntries = (value: unknown): value is Record<string, string> =>
  typeof value === "object" && value !== null && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string");

/** Does the grant reach this job? Every part of its reach that is given must hold. */
export function reaches(grant: Grant, job: { job_id: string; session_id: string | null; tags?: string[] }): boolean {
  if (grant.runs && !grant.runs.includes(job.job_id)) return false;
  if (grant.session_id !== null && job.session_id !== grant.session_id) return false;
  if (grant.tags && !grant.tags.every((t) => (job.tags ?? []).includes(t))) return false;
  return true;
}

/** Whether reaching a job needs the job itself (its session or tags), not only its id. */
export const reachNeedsJob = (grant: Grant) => grant.session_id !== null || grant.tags !== null;
