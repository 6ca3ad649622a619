/** Scoped tokens: minting them, and what `GET /api/v1/tokens/verify` says of one. */
import { runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { SCOPES } from "../../src/schemas";
import { api, runStub } from "../helpers";
import { ALPHA, bearer, fetchWith, finishedJob, JSON_TYPE, mint } from "./helpers";

/** A token minted between `before` and `after` expires `seconds` on from the second it was minted in. */
function expectExpiry(expiresAt: string, before: number, after: number, seconds: number) {
  const second = (ms: number) => Math.floor(ms / 1000) * 1000;
  expect(Date.parse(expiresAt)).toBeGreaterThanOrEqual(second(before) + seconds * 1000);
  expect(Date.parse(expiresAt)).toBeLessThanOrEqual(second(after) + seconds * 1000);
}

describe("minting", () => {
  it("answers 201 with the token and what it grants, with the contract's defaults", async () => {
    const before = Date.now();
    const minted = await mint({ scopes: ["read", "submit"], session_id: "s1" });
    expect(minted).toMatchObject({ scopes: ["read", "submit"], runs: null, session_id: "s1", tags: null, max_submits: 1, concurrency_key: null, priority: null, config: null, agent: null, metadata: null });
    expect(minted.token).toMatch(/^ert_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    // 15 minutes by default.
    expectExpiry(minted.expires_at, before, Date.now(), 900);
    expect((await mint({ scopes: ["read"], tags: ["t1"] })).max_submits).toBeNull();
    expect((await mint({ scopes: ["submit"] })).runs).toBeNull();
  });

  it("lasts ttl_seconds when given, from a minute to a day", async () => {
    for (const ttl_seconds of [60, 86_400]) {
      const before = Date.now();
      const minted = await mint({ scopes: ["read"], session_id: "s1", ttl_seconds });
      expectExpiry(minted.expires_at, before, Date.now(), ttl_seconds);
    }
  });

  it("grants each scope, run and tag once, however often given", async () => {
    const minted = await mint({ scopes: ["read", "read", "cancel"], runs: ["run_a", "run_a"], tags: ["t1", "t1", "t2"] });
    expect(minted).toMatchObject({ scopes: ["read", "cancel"], runs: ["run_a"], tags: ["t1", "t2"] });
  });

  it("reads a null field as not given, as a backend that sends every field sends it", async () => {
    const minted = await mint({ scopes: ["read", "submit"], session_id: "s1", runs: null, tags: null, ttl_seconds: null, max_submits: null });
    expect(minted).toMatchObject({ scopes: ["read", "submit"], runs: null, session_id: "s1", tags: null, max_submits: 1 });
    // Empty metadata, like null, is none.
    expect((await mint({ scopes: ["submit"], metadata: {} })).metadata).toBeNull();
    // A reach of nulls is no reach.
    const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify({ scopes: ["read"], session_id: null, runs: null }) });
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({
      detail: [{ loc: ["body"], msg: "A token needs a reach (runs, session_id or tags) unless its only scope is submit", type: "custom" }],
    });
  });

  it.each([
    ["no scopes", { scopes: [], session_id: "s" }, ["body", "scopes"]],
    ["an unknown scope", { scopes: ["read", "admin"], session_id: "s" }, ["body", "scopes", 1]],
    ["scopes that are not a list", { scopes: "read", session_id: "s" }, ["body", "scopes"]],
    ["no reach for read", { scopes: ["read"] }, ["body"]],
    ["no reach for submit and cancel", { scopes: ["submit", "cancel"] }, ["body"]],
    ["ttl_seconds below 60", { scopes: ["read"], session_id: "s", ttl_seconds: 59 }, ["body", "ttl_seconds"]],
    ["ttl_seconds above a day", { scopes: ["read"], session_id: "s", ttl_seconds: 86_401 }, ["body", "ttl_seconds"]],
    ["ttl_seconds not whole", { scopes: ["read"], session_id: "s", ttl_seconds: 90.5 }, ["body", "ttl_seconds"]],
    ["max_submits of 0", { scopes: ["submit"], max_submits: 0 }, ["body", "max_submits"]],
    ["max_submits above 1,000", { scopes: ["submit"], max_submits: 1001 }, ["body", "max_submits"]],
    ["max_submits without submit", { scopes: ["read"], session_id: "s", max_submits: 2 }, ["body", "max_submits"]],
    ["more than 100 runs", { scopes: ["read"], runs: Array.from({ length: 101 }, (_, i) => `run_${i}`) }, ["body", "runs"]],
    ["an empty runs list", { scopes: ["read"], runs: [] }, ["body", "runs"]],
    ["a run that is no job id", { scopes: ["read"], runs: ["job-1"] }, ["body", "runs", 0]],
    ["a malformed tag", { scopes: ["read"], tags: ["has space"] }, ["body", "tags", 0]],
    ["more than 10 tags", { scopes: ["read"], tags: Array.from({ length: 11 }, (_, i) => `t${i}`) }, ["body", "tags"]],
    ["an empty session_id", { scopes: ["read"], session_id: "" }, ["body", "session_id"]],
    ["an unknown field", { scopes: ["read"], session_id: "s", tenant: "beta" }, ["body"]],
    ["a priority above 9", { scopes: ["submit"], priority: 10 }, ["body", "priority"]],
    ["an empty concurrency_key", { scopes: ["submit"], concurrency_key: "" }, ["body", "concurrency_key"]],
    ["a concurrency_key without submit", { scopes: ["read"], session_id: "s", concurrency_key: "u-1" }, ["body", "concurrency_key"]],
    ["a priority without submit", { scopes: ["read"], session_id: "s", priority: 9 }, ["body", "priority"]],
    ["config without submit", { scopes: ["read"], session_id: "s", config: { model: "m" } }, ["body", "config"]],
    ["a config key that is no model setting", { scopes: ["submit"], config: { simulate: { steps: 1 } } }, ["body", "config"]],
    ["a budget of 0", { scopes: ["submit"], config: { max_total_tokens: 0 } }, ["body", "config", "max_total_tokens"]],
    ["an empty model", { scopes: ["submit"], config: { model: "" } }, ["body", "config", "model"]],
    ["metadata without submit", { scopes: ["read"], session_id: "s", metadata: { user: "u-1" } }, ["body", "metadata"]],
    ["more than 5 metadata entries", { scopes: ["submit"], metadata: Object.fromEntries(["a", "b", "c", "d", "e", "f"].map((k) => [k, k])) }, ["body", "metadata"]],
    ["a metadata value that is no text", { scopes: ["submit"], metadata: { user: 42 } }, ["body", "metadata", "user"]],
    ["an agent without submit", { scopes: ["read"], session_id: "s", agent: "recipe:summarize" }, ["body", "agent"]],
    ["an inline agent, which has no name", { scopes: ["submit"], agent: "yaml:inline" }, ["body", "agent"]],
    ["an agent named as a bare file", { scopes: ["submit"], agent: "agents.yaml" }, ["body", "agent"]],
    ["an agent that is no text", { scopes: ["submit"], agent: { recipe: "summarize" } }, ["body", "agent"]],
  ])("%s → 422 naming the field", async (_what, body, loc) => {
    const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify(body) });
    expect(res.status).toBe(422);
    const { detail } = await res.json<{ detail: { loc: unknown[]; msg: string }[] }>();
    expect(detail.map((d) => d.loc)).toContainEqual(loc);
    expect(detail.every((d) => d.msg.length > 0)).toBe(true);
  });

  it.each([
    ["recipe:nope", "Recipe not found: nope"],
    ["file:missing.yaml", "Unknown agent_file: missing.yaml. Available: [agents.yaml]"],
    ["file:../wrangler.jsonc", "agent_file must name a YAML file inside the agents folder: ../wrangler.jsonc"],
  ])("minting an agent the deployment does not bundle (%s) → 400, as its submit would be", async (agent, detail) => {
    const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify({ scopes: ["submit"], agent }) });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail });
  });

  it("a token cannot mint a token (403), whatever its scopes", async () => {
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ scopes: ["read"], session_id: "s1" }) });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ detail: "Token does not allow minting tokens" });
  });

  it("a deployment with keys and no TOKEN_SECRET answers 501, and takes no token", async () => {
    const { token } = await mint({ scopes: ["read"], session_id: "s1" });
    const res = await fetchWith({ TOKEN_SECRET: "" }, "/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify({ scopes: ["read"], session_id: "s" }) });
    expect(res.status).toBe(501);
    expect(await res.json()).toEqual({ detail: "Tokens need the TOKEN_SECRET secret" });
    const refused = await fetchWith({ TOKEN_SECRET: "" }, "/api/v1/runs", { headers: bearer(token) });
    expect(refused.status).toBe(401);
    expect(await refused.json()).toEqual({ detail: "Unauthorized" });
  });
});

describe("GET /api/v1/tokens/verify", () => {
  const verify = (headers: Record<string, string>) => api("/api/v1/tokens/verify", { headers });

  it("answers what the token grants, and how many submits it has left as it spends them", async () => {
    const session = `verify-${crypto.randomUUID()}`;
    const minted = await mint({ scopes: ["submit", "read", "stream"], session_id: session, tags: ["web"], max_submits: 2 });
    const { token, ...grant } = minted;
    const res = await verify(bearer(token));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ...grant, submits_left: 2 });

    const made: string[] = [];
    const submit = async () => {
      const res = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ prompt: "p" }) });
      if (res.status === 202) made.push((await res.json<{ job_id: string }>()).job_id);
      return res.status;
    };
    expect(await submit()).toBe(202);
    expect(await (await verify(bearer(token))).json()).toMatchObject({ submits_left: 1 });
    expect(await submit()).toBe(202);
    expect(await (await verify(bearer(token))).json()).toMatchObject({ submits_left: 0 });
    expect(await submit()).toBe(403);
    expect(await (await verify(bearer(token))).json()).toMatchObject({ submits_left: 0 });
    // The tenant's run slots go back to the other tests (a cancelled job's alarm gives its slot back).
    for (const id of made) {
      expect((await api(`/api/v1/runs/${id}/cancel`, { method: "POST", headers: ALPHA })).status).toBe(200);
      await runDurableObjectAlarm(runStub(id, "alpha"));
    }
  });

  it("a token limited to runs, without submit: its runs, no submits to count", async () => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: ["read"], runs: [id] });
    expect(await (await verify(bearer(token))).json()).toMatchObject({ scopes: ["read"], runs: [id], session_id: null, max_submits: null, submits_left: null });
  });

  it("an API key may do everything, with no reach, expiry or submit limit", async () => {
    const res = await verify(ALPHA);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
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
    });
  });

  it("no credential, a wrong one, or ?token= → 401 or 400, as on every other route", async () => {
    expect((await verify({})).status).toBe(401);
    expect((await verify(bearer("ert_not.atoken"))).status).toBe(401);
    const { token } = await mint({ scopes: ["read"], session_id: "s1" });
    const res = await api(`/api/v1/tokens/verify?token=${token}`);
    expect(res.status).toBe(400);
    expect((await res.json<{ detail: string }>()).detail).toMatch(/^\?token= is accepted only by/);
  });
});
