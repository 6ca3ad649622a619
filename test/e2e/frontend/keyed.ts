/**
 * A `wrangler dev` in a deployment's shape for the tests of the reference frontend with a scoped
 * token: an API key (its tenant, "web") and TOKEN_SECRET. The tenant's backend acts with the key:
 * it mints the tokens a page is given, starts runs, and deletes what a test leaves running.
 */
import { createHash } from "node:crypto";
import { expect } from "vitest";
import { withServerAndChromium } from "./page";

const KEYED_PORT = 8007;
export const KEYED = `http://127.0.0.1:${KEYED_PORT}`;
const KEY = "frontend-test-key";
export const TOKEN_SECRET = "frontend-test-token-secret-0123456789abcdef";

/** Before the calling file's tests, starts the keyed server and Chromium; after them, closes both. */
export function withKeyedServerAndChromium(): void {
  const keys = JSON.stringify({ [createHash("sha256").update(KEY).digest("hex")]: "web" });
  withServerAndChromium(undefined, ["--var", `API_KEYS:${keys}`, "--var", `TOKEN_SECRET:${TOKEN_SECRET}`, "--inspector-port", "9231"], KEYED_PORT);
}

/** A request of the tenant's backend, with its key. */
export const withKey = (path: string, init: RequestInit = {}) =>
  fetch(`${KEYED}${path}`, { ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${KEY}` } });

/** Runs a test leaves unfinished go, so that they hold none of the tenant's run slots. */
export const forceDelete = (...ids: string[]) => Promise.all(ids.map((id) => withKey(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })));

/** A token the backend mints with `body`. */
export async function mint(body: Record<string, unknown>): Promise<string> {
  const res = await withKey("/api/v1/tokens", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(res.status).toBe(201);
  return (await res.json()).token;
}

/** A run of the tenant in `session`, submitted with its key, on the simulated runner with the `simulate` knobs. */
export async function backendRun(session: string, simulate: Record<string, number>, prompt = "from the backend"): Promise<string> {
  const res = await withKey("/api/v1/runs", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, session_id: session, config: { simulate } }),
  });
  expect(res.status).toBe(202);
  return (await res.json()).job_id;
}

/** A run of the tenant, submitted with its key, that runs until it is cancelled. */
export const longRun = (session: string) => backendRun(session, { steps: 2, step_ms: 600_000 }, "long");
