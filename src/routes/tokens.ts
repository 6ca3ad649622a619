/** POST /api/v1/tokens: a tenant's backend mints a short-lived scoped token for one of its users' browsers. */
import { Hono } from "hono";
import { configuredKeys, keyOnly, tokenSecret, type AppEnv } from "../auth";
import { limits } from "../config";
import { ApiError } from "../errors";
import { jsonBody } from "../http/body";
import type { Operation } from "../http/openapi";
import { valid } from "../http/validation";
import { errorSchema, tokenBodySchema, tokenSchema } from "../schemas";
import { mintToken, type Grant } from "../tokens";

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
    403: { json: errorSchema, description: "A token cannot mint tokens" },
    422: { json: errorSchema, description: "The request breaks the schema" },
    501: { json: errorSchema, description: "The deployment has no TOKEN_SECRET" },
  },
});

tokens.post("/api/v1/tokens", keyOnly("minting tokens"), jsonBody((env) => limits(env).maxBodyBytes), valid("json", tokenBodySchema), async (c) => {
  const body = c.req.valid("json");
  const secret = tokenSecret(c.env, configuredKeys(c.env).length > 0);
  if (secret === null) throw new ApiError("not_implemented", "Tokens need the TOKEN_SECRET secret");
  const scopes = [...new Set(body.scopes)];
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
  };
  return c.json(
    {
      token: await mintToken(grant, secret),
      expires_at: new Date(grant.expires * 1000).toISOString(),
      scopes: grant.scopes,
      runs: grant.runs,
      session_id: grant.session_id,
      tags: grant.tags,
      max_submits: grant.max_submits,
    },
    201,
  );
});
