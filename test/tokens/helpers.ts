/** What the token tests share: the two tenants' keys, minting, a finished job, and every route that acts on one job. */
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { expect } from "vitest";
import worker from "../../src/index";
import { type Scope } from "../../src/schemas";
import { TOKEN_PREFIX } from "../../src/tokens";
import { overlay } from "../faults";
import { api, BASE, driveTo } from "../helpers";

export const ALPHA = { Authorization: "Bearer key-alpha" };
export const BETA = { Authorization: "Bearer key-beta" };
export const JSON_TYPE = { "content-type": "application/json" };

export interface Minted {
  token: string;
  expires_at: string;
  scopes: Scope[];
  runs: string[] | null;
  session_id: string | null;
  tags: string[] | null;
  max_submits: number | null;
  concurrency_key: string | null;
  priority: number | null;
  config: Record<string, unknown> | null;
  agent: string | null;
  metadata: Record<string, string> | null;
}

export async function mint(body: Record<string, unknown>, headers: Record<string, string> = ALPHA): Promise<Minted> {
  const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...headers }, body: JSON.stringify(body) });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
}

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** What a token says inside, as signed: its id (`i`) and the id of the key that minted it (`k`). */
export const payloadOf = (token: string): { i: string; k: string } => JSON.parse(atob(token.slice(TOKEN_PREFIX.length, token.indexOf(".")).replace(/-/g, "+").replace(/_/g, "/")));

/** A job of tenant alpha (session s1, tags t1 and t2), run to its end. */
export async function finishedJob(extra: Record<string, unknown> = {}): Promise<string> {
  const res = await api("/api/v1/runs", {
    method: "POST",
    headers: { ...JSON_TYPE, ...ALPHA },
    body: JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } }, session_id: "s1", tags: ["t1", "t2"], ...extra }),
  });
  expect(res.status).toBe(202);
  const { job_id } = await res.json<{ job_id: string }>();
  await driveTo(job_id, "succeeded", 20, { tenant: "alpha", headers: ALPHA });
  return job_id;
}

/** Every route that acts on one job, the scope it needs, and how a token calls it. */
export const JOB_ROUTES: [string, string, Scope, string?][] = [
  ["GET", "", "read"],
  ["GET", "/result", "read"],
  ["GET", "/output", "read"],
  ["GET", "/stream", "stream"],
  ["POST", "/cancel", "cancel"],
  ["POST", "/input", "input", JSON.stringify({ action: "approve" })],
  ["POST", "/retry", "submit", "{}"],
  ["DELETE", "", "delete"],
];

export function call(id: string, [method, suffix, , body]: (typeof JOB_ROUTES)[number], token: string): Promise<Response> {
  return api(`/api/v1/runs/${id}${suffix}`, { method, headers: { ...JSON_TYPE, ...bearer(token) }, body });
}

/** The Worker with some settings changed, as a deployment with them would answer. */
export async function fetchWith(settings: Partial<Env>, path: string, init?: RequestInit): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch!(new Request(`${BASE}${path}`, init) as Request<unknown, IncomingRequestCfProperties>, overlay(env, settings), ctx);
  await waitOnExecutionContext(ctx);
  return res;
}
