import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { overlay } from "../faults";
import { api } from "../helpers";

describe("rate limiting per API key (the RATE_LIMITER binding, 50 a minute here)", () => {
  it("answers 429 with Retry-After once a key has used its requests, and other keys go on", { timeout: 30_000 }, async () => {
    const gamma = { "X-API-Key": "key-gamma" };
    // The binding counts in fixed windows of the wall clock's minutes: the requests must all fall
    // within one, so a run that would reach the next minute starts with it.
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 20_000) await new Promise((r) => setTimeout(r, left + 50));
    const statuses: number[] = [];
    for (let i = 0; i < 55; i++) statuses.push((await api("/api/v1/runs?page_size=1", { headers: gamma })).status);
    expect(statuses.filter((s) => s === 200).length).toBe(50);
    const limited = await api("/stats", { headers: gamma });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect(await limited.json()).toEqual({ detail: "Rate limit exceeded for this API key" });
    expect((await api("/stats", { headers: { "X-API-Key": "key-beta" } })).status).toBe(200);
  });
});

describe("rate limiting of scoped tokens (the TOKEN_RATE_LIMITER binding, 20 a minute here)", () => {
  it("each token has its own limit, apart from its key's: a browser spending its token's requests spends neither its backend's nor another browser's", { timeout: 30_000 }, async () => {
    const delta = { "X-API-Key": "key-delta" };
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 20_000) await new Promise((r) => setTimeout(r, left + 50));
    const mint = async () => {
      const minted = await api("/api/v1/tokens", { method: "POST", headers: { ...delta, "content-type": "application/json" }, body: JSON.stringify({ scopes: ["read"], session_id: "s" }) });
      expect(minted.status).toBe(201);
      return { Authorization: `Bearer ${(await minted.json<{ token: string }>()).token}` };
    };
    const [greedy, other] = [await mint(), await mint()];
    // Past the key's 50: had the token's requests counted against its key, the backend would be refused.
    const statuses: number[] = [];
    for (let i = 0; i < 55; i++) statuses.push((await api("/api/v1/runs?page_size=1", { headers: greedy })).status);
    expect(statuses.filter((s) => s === 200).length).toBe(20);
    expect(statuses.slice(20).every((s) => s === 429)).toBe(true);
    const limited = await api("/api/v1/runs?page_size=1", { headers: greedy });
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect(await limited.json()).toEqual({ detail: "Rate limit exceeded for this token" });
    expect((await api("/api/v1/runs?page_size=1", { headers: other })).status).toBe(200);
    expect((await api("/stats", { headers: delta })).status).toBe(200);
  });
});

describe("CORS with keys configured (CORS_ORIGINS=https://app.example.com)", () => {
  const preflight = (origin: string) =>
    api("/api/v1/runs", {
      method: "OPTIONS",
      headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, authorization, idempotency-key" },
    });

  it("allows the configured origin, with the headers clients need", async () => {
    const res = await preflight("https://app.example.com");
    expect(res.status).toBe(204);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe("https://app.example.com");
    expect(res.headers.get("Access-Control-Allow-Headers")).toContain("Idempotency-Key");
    const get = await api("/api/v1/runs", { headers: { Origin: "https://app.example.com", Authorization: "Bearer key-alpha" } });
    expect(get.headers.get("Access-Control-Allow-Origin")).toBe("https://app.example.com");
    expect(get.headers.get("Access-Control-Expose-Headers")).toContain("Idempotent-Replayed");
  });

  it("allows no other origin, localhost included", async () => {
    for (const origin of ["https://evil.example.com", "http://localhost:3000"]) {
      expect((await preflight(origin)).headers.get("Access-Control-Allow-Origin")).toBeNull();
    }
  });

  /** A preflight to a deployment with these CORS_ORIGINS, and the origin it allows. */
  const allowedUnder = async (origins: string, origin: string) => {
    const init = { method: "OPTIONS", headers: { Origin: origin, "Access-Control-Request-Method": "GET" } };
    const res = await app.request("http://localhost/api/v1/runs", init, overlay(env, { CORS_ORIGINS: origins }));
    return res.headers.get("Access-Control-Allow-Origin");
  };

  it("CORS_ORIGINS=* allows every origin", async () => {
    for (const origin of ["https://evil.example.com", "https://app.example.com", "http://localhost:3000"]) expect(await allowedUnder("*", origin)).toBe(origin);
  });

  it("CORS_ORIGINS left empty allows none, localhost included, where keys are configured", async () => {
    for (const origin of ["https://app.example.com", "http://localhost:3000", "http://127.0.0.1:5173"]) expect(await allowedUnder("", origin)).toBeNull();
  });

  it("an unauthorised answer still carries CORS headers, so the browser can read the 401", async () => {
    const res = await api("/api/v1/runs", { headers: { Origin: "https://app.example.com" } });
    expect(res.status).toBe(401);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe("https://app.example.com");
  });
});

describe("conflicting key headers", () => {
  it("Authorization and X-API-Key naming different keys → 400", async () => {
    const res = await api("/api/v1/runs", { headers: { Authorization: "Bearer key-alpha", "X-API-Key": "key-beta" } });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Authorization and X-API-Key name different keys: send one" });
    expect((await api("/api/v1/runs", { headers: { Authorization: "Bearer key-alpha", "X-API-Key": "key-alpha" } })).status).toBe(200);
  });

  it("an Authorization header that is no bearer credential, beside a key in X-API-Key → 400", async () => {
    const res = await api("/api/v1/runs", { headers: { Authorization: "Basic a2V5LWFscGhhOg==", "X-API-Key": "key-alpha" } });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Authorization and X-API-Key name different keys: send one" });
  });

  it("?token= and an Authorization header naming different credentials → 400; naming the same one, taken", async () => {
    const minted = await api("/api/v1/tokens", {
      method: "POST",
      headers: { Authorization: "Bearer key-alpha", "content-type": "application/json" },
      body: JSON.stringify({ scopes: ["read", "stream"], session_id: "both-ways" }),
    });
    expect(minted.status).toBe(201);
    const { token } = await minted.json<{ token: string }>();
    const feed = `/api/v1/runs/events?token=${encodeURIComponent(token)}`;
    const res = await api(feed, { method: "HEAD", headers: { Authorization: "Bearer key-alpha" } });
    expect(res.status).toBe(400);
    const refused = await api(feed, { headers: { Authorization: "Bearer key-alpha" } });
    expect(await refused.json()).toEqual({ detail: "?token= and the Authorization header name different credentials: send one" });
    expect((await api(feed, { method: "HEAD", headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
  });
});
