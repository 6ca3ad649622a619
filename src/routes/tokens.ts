/**
 * POST /api/v1/tokens: a tenant's backend mints a short-lived scoped token for one of its users'
 * browsers. GET /api/v1/tokens/verify: what the request's own credential may do, so that a page
 * holding a token offers just that.
 */
import { Hono } from "hono";
import { configuredKeys, keyOnly, tokenSecrets, type AppEnv } from "../auth";
import { limits } from "../config";
import { ApiError } from "../errors";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import { credentialSchema, errorSchema, hasEntries, SCOPES, tokenBodySchema, tokenSchema, type Credential } from "../schemas";
import { agentChoice, resolveAgent } from "../runners/agents";
import { mintToken, type Grant } from "../tokens";
import { submitsLeft } from "./entry";
import { errors } from "./reach";

export const tokens = new Hono<AppEnv>();
export const tokenOperations: Operation[] = [];

const DEFAULT_TTL_S = 900;

tokenOperations.push({
  method: "post",
  path: "/api/v1/tokens",
  summary: "Mint a scoped token for a browser (API key only)",
  body: tokenBodySchema,
  responses: {
    201: { json: tokenSchema, description: "The token and what it grants" },
    400: { json: errorSchema, description: "The agent named is not bundled with the deployment" },
    403: { json: errorSchema, description: "A token cannot mint tokens" },
    422: errors[422],
    501: { json: errorSchema, description: "The deployment has no TOKEN_SECRET" },
  },
});

tokens.post("/api/v1/tokens", keyOnly("minting tokens"), jsonBody((env) => limits(env).maxBodyBytes), valid("json", tokenBodySchema), async (c) => {
  const body = c.req.valid("json");
  const secrets = tokenSecrets(c.env, configuredKeys(c.env).length > 0);
  if (secrets === null) throw new ApiError("not_implemented", "Tokens need the TOKEN_SECRET secret");
  const scopes = [...new Set(body.scopes)];
  // An agent the deployment does not bundle is refused now as a submit would refuse it (400), not at every submit.
  if (body.agent != null) resolveAgent(agentChoice(body.agent));
  const grant: Grant = {
    id: crypto.randomUUID(),
    tenant: c.get("tenant"),
    key: c.get("keyId") ?? "",
    scopes,
    runs: body.runs ? [...new Set(body.runs)] : null,
    session_id: body.session_id ?? null,
    tags: body.tags ? [...new Set(body.tags)] : null,
    expires: Math.floor(Date.now() / 1000) + (body.ttl_seconds ?? DEFAULT_TTL_S),
    max_submits: scopes.includes("submit") ? (body.max_submits ?? 1) : null,
    concurrency_key: body.concurrency_key ?? null,
    priority: body.priority ?? null,
    config: body.config ?? null,
    agent: body.agent ?? null,
    metadata: hasEntries(body.metadata) ? body.metadata : null,
  };
  return c.json({ token: await mintToken(grant, secrets[0]), ...granted(grant) }, 201);
});

/** What a token grants, as its answers say it. */
function granted(grant: Grant) {
  const { scopes, runs, session_id, tags, max_submits, concurrency_key, priority, config, agent, metadata } = grant;
  return { expires_at: new Date(grant.expires * 1000).toISOString(), scopes, runs, session_id, tags, max_submits, concurrency_key, priority, config, agent, metadata };
}

tokenOperations.push({
  method: "get",
  path: "/api/v1/tokens/verify",
  summary: "What the request's token grants and how many submits it has left (with an API key: everything)",
  responses: { 200: { json: credentialSchema, description: "The credential's scopes, reach, expiry and submits left" } },
});

/** A key (or local development without keys) may do everything, to every job of its tenant, for as long as it is configured. */
const KEY_CREDENTIAL: Credential = {
  expires_at: null,
  scopes: [...SCOPES],
  runs: null,
  session_id: null,
  tags: null,
  max_submits: null,
  concurrency_key: null,
  priority: null,
  config: null,
  agent: null,
  metadata: null,
  submits_left: null,
};

tokens.get("/api/v1/tokens/verify", async (c) => {
  const grant = c.get("token");
  if (grant === null) return c.json(KEY_CREDENTIAL, 200);
  const credential: Credential = { ...granted(grant), submits_left: await submitsLeft(c, grant) };
  return c.json(credential, 200);
});
