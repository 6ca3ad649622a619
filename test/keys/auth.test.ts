import { runDurableObjectAlarm, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, JOB_ENDPOINTS, r2Keys, runStub } from "../helpers";

const ALPHA = { Authorization: "Bearer key-alpha" };
const BETA = { "X-API-Key": "key-beta" };

async function submitAs(headers: Record<string, string>, body: Record<string, unknown> = {}): Promise<string> {
  const res = await api("/api/v1/runs", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } }, ...body }),
  });
  expect(res.status).toBe(202);
  return (await res.json<{ job_id: string }>()).job_id;
}

describe("API keys", () => {
  it.each([
    ["no key", {}],
    ["an unknown bearer key", { Authorization: "Bearer key-unknown" }],
    ["an unknown X-API-Key", { "X-API-Key": "key-unknown" }],
    ["another scheme", { Authorization: "Basic a2V5LWFscGhh" }],
    ["an empty bearer", { Authorization: "Bearer " }],
    ["a key differing in case", { Authorization: "Bearer KEY-ALPHA" }],
  ])("%s → 401 Unauthorized with WWW-Authenticate", async (_name, headers) => {
    for (const path of ["/api/v1/runs", "/stats", "/api/v1/runs/run_abc"]) {
      const res = await api(path, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get("WWW-Authenticate")).toBe("Bearer");
      expect(await res.json()).toEqual({ detail: "Unauthorized" });
    }
  });

  it("accepts a configured key as a bearer token or as X-API-Key", async () => {
    expect((await api("/api/v1/runs", { headers: ALPHA })).status).toBe(200);
    expect((await api("/api/v1/runs", { headers: { "X-API-Key": "key-alpha" } })).status).toBe(200);
    expect((await api("/api/v1/runs", { headers: { Authorization: "bearer key-alpha" } })).status).toBe(200);
  });

  it("serves /health and /openapi.json without a key", async () => {
    expect((await api("/health")).status).toBe(200);
    expect((await api("/openapi.json")).status).toBe(200);
  });

  it("keys apply on a localhost host too", async () => {
    for (const origin of ["http://localhost", "http://127.0.0.1:8005"]) {
      expect((await SELF.fetch(`${origin}/api/v1/runs`)).status).toBe(401);
      expect((await SELF.fetch(`${origin}/api/v1/runs`, { headers: ALPHA })).status).toBe(200);
    }
  });
});

describe("tenant isolation", () => {
  it("another tenant's job is answered like an unknown id on every endpoint", async () => {
    const id = await submitAs(ALPHA, { session_id: "iso" });
    await runDurableObjectAlarm(runStub(id, "alpha"));
    for (const [method, suffix] of JOB_ENDPOINTS) {
      const res = await api(`/api/v1/runs/${id}${suffix}`, { method, headers: BETA });
      expect(res.status, `${method} ${suffix}`).toBe(404);
      expect(await res.json()).toEqual({ detail: `Job not found: ${id}` });
    }
    // Untouched for its owner.
    const own = await api(`/api/v1/runs/${id}/result`, { headers: ALPHA });
    expect(own.status).toBe(200);
    expect(await r2Keys(`runs/alpha/${id}/`)).toHaveLength(1);
  });

  it("lists and stats count only the caller's jobs", async () => {
    const alphaJob = await submitAs(ALPHA, { session_id: "iso-list" });
    const betaJob = await submitAs(BETA, { session_id: "iso-list" });
    const ids = async (headers: Record<string, string>) =>
      (await (await api("/api/v1/runs?session_id=iso-list", { headers })).json<{ jobs: { job_id: string }[] }>()).jobs.map((j) => j.job_id);
    expect(await ids(ALPHA)).toEqual([alphaJob]);
    expect(await ids(BETA)).toEqual([betaJob]);
  });

  it("stats count only the caller's jobs", async () => {
    const total = async (headers: Record<string, string>) =>
      (await (await api("/stats", { headers })).json<{ total_jobs: number }>()).total_jobs;
    const [alphaBefore, betaBefore] = [await total(ALPHA), await total(BETA)];
    await submitAs(ALPHA);
    await submitAs(ALPHA);
    expect(await total(ALPHA)).toBe(alphaBefore + 2);
    expect(await total(BETA)).toBe(betaBefore);
  });

  it("idempotency keys are per tenant", async () => {
    const a = await submitAs({ ...ALPHA, "Idempotency-Key": "shared" });
    const b = await submitAs({ ...BETA, "Idempotency-Key": "shared" });
    expect(b).not.toBe(a);
  });
});
