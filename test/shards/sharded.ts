/** What the tests of a tenant in shards share (see vitest.config.ts, "workers-shards"). */
import { expect } from "vitest";
import { post } from "../helpers";

/** The tenant's projection shards in the "workers-shards" project. */
export const SHARDS = 3;

/** A job of `session`, due in an hour: it waits in line and changes only when a test makes it. */
export async function submitIn(session: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
  const res = await post("/api/v1/runs", { prompt: "sharded", session_id: session, config: { simulate: { step_ms: 1 } }, delay_seconds: 3600, ...extra }, headers);
  expect(res.status).toBe(202);
  return (await res.json<{ job_id: string }>()).job_id;
}
