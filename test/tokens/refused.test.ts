/** Scoped tokens refused: expired, altered or revoked; a stream ending when its token expires; `?token=` only where a browser needs it. */
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { SCOPES } from "../../src/schemas";
import { mintToken, verifyToken, type Grant } from "../../src/tokens";
import type { Scope } from "../../src/schemas";
import { api, parseSse, runStub } from "../helpers";
import { TOKEN_SECRET } from "./protocol";
import { ALPHA, BETA, bearer, fetchWith, finishedJob, JSON_TYPE, mint, payloadOf, type Minted } from "./helpers";

describe("a token that is expired, altered or revoked", () => {
  const grant = (over: Partial<Grant> = {}): Grant => ({
    id: crypto.randomUUID(),
    tenant: "alpha",
    key: "",
    scopes: ["read"],
    runs: null,
    session_id: "s1",
    tags: null,
    expires: Math.floor(Date.now() / 1000) + 600,
    max_submits: null,
    concurrency_key: null,
    priority: null,
    config: null,
    agent: null,
    metadata: null,
    ...over,
  });

  it("an expired token → 401 Token expired", async () => {
    const { token } = await mint({ scopes: ["read"], session_id: "s1" });
    const payload = payloadOf(token);
    const expired = await mintToken(grant({ key: payload.k, expires: Math.floor(Date.now() / 1000) - 1 }), TOKEN_SECRET);
    const res = await api("/api/v1/runs", { headers: bearer(expired) });
    expect(res.status).toBe(401);
    expect(res.headers.get("WWW-Authenticate")).toBe("Bearer");
    expect(await res.json()).toEqual({ detail: "Token expired" });
    // The same grant unexpired is taken: only the expiry differs.
    expect((await api("/api/v1/runs", { headers: bearer(await mintToken(grant({ key: payload.k }), TOKEN_SECRET)) })).status).toBe(200);
  });

  it("is expired from the second its expiry names", async () => {
    const expires = Math.floor(Date.now() / 1000) + 60;
    const token = await mintToken(grant({ expires }), TOKEN_SECRET);
    expect(await verifyToken(token, [TOKEN_SECRET], [], expires * 1000 - 1)).toMatchObject({ ok: true });
    expect(await verifyToken(token, [TOKEN_SECRET], [], expires * 1000)).toEqual({ ok: false, why: "expired" });
  });

  it("on a server without API keys (local development), only a token minted there, by no key, is taken", async () => {
    const { token } = await mint({ scopes: ["read"], session_id: "s1" });
    const local = { API_KEYS: "" };
    const keyed = await fetchWith(local, "/api/v1/runs", { headers: bearer(token) });
    expect(keyed.status).toBe(401);
    expect(await keyed.json()).toEqual({ detail: "Unauthorized" });
    expect((await fetchWith(local, "/api/v1/runs", { headers: bearer(await mintToken(grant(), TOKEN_SECRET)) })).status).toBe(200);
  });

  it("a scope or metadata this version cannot read (signed by a newer one, during a deploy) is left out; the rest of the token stands", async () => {
    const { k } = payloadOf((await mint({ scopes: ["read"], session_id: "s1" })).token);
    const newer = grant({ key: k, scopes: ["read", "pause"] as unknown as Scope[], metadata: { user: 42 } as unknown as Record<string, string> });
    const res = await api("/api/v1/tokens/verify", { headers: bearer(await mintToken(newer, TOKEN_SECRET)) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ scopes: ["read"], session_id: "s1", metadata: null });
  });

  it("every byte of the payload and of the signature altered → 401 Unauthorized", async () => {
    const { token } = await mint({ scopes: ["read"], session_id: "s1" });
    expect((await api("/api/v1/runs", { headers: bearer(token) })).status).toBe(200);
    const [body, signature] = token.slice(4).split(".");
    const decode = (text: string) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
    const encode = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    const altered: string[] = [];
    for (const [part, text] of [["body", body], ["signature", signature]] as const) {
      const bytes = decode(text);
      for (let i = 0; i < bytes.length; i++) {
        const copy = bytes.slice();
        copy[i] ^= 0x01;
        altered.push(part === "body" ? `ert_${encode(copy)}.${signature}` : `ert_${body}.${encode(copy)}`);
      }
    }
    for (let i = 0; i < altered.length; i += 25) {
      const answers = await Promise.all(altered.slice(i, i + 25).map((candidate) => api("/api/v1/runs", { headers: bearer(candidate) })));
      for (const res of answers) {
        expect(res.status).toBe(401);
        expect(await res.json()).toEqual({ detail: "Unauthorized" });
      }
    }
    // Another spelling of the same signature, a token cut short, or signed with another secret.
    const last = signature.at(-1)!;
    const respelled = `ert_${body}.${signature.slice(0, -1)}${String.fromCharCode(last.charCodeAt(0) + 1)}`;
    for (const candidate of [respelled, token.slice(0, -4), `ert_${body}`, await mintToken(grant(), "another-secret-of-at-least-32-chars!!")]) {
      expect((await api("/api/v1/runs", { headers: bearer(candidate) })).status).toBe(401);
    }
  });

  it("while TOKEN_SECRET is rotated, tokens signed with the one before it still work; new ones are signed with the new one; ending the rotation ends the old ones", async () => {
    const NEW_SECRET = "the-secret-that-replaces-the-tests-one-0123";
    const rotating = { TOKEN_SECRET: NEW_SECRET, TOKEN_SECRET_PREVIOUS: TOKEN_SECRET };
    const old = (await mint({ scopes: ["read"], session_id: "s1" })).token;
    expect((await fetchWith(rotating, "/api/v1/runs", { headers: bearer(old) })).status).toBe(200);
    const minted = await fetchWith(rotating, "/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify({ scopes: ["read"], session_id: "s1" }) });
    expect(minted.status).toBe(201);
    const fresh = (await minted.json<Minted>()).token;
    // Both work while the rotation lasts: the new secret's and the old one's.
    expect((await fetchWith(rotating, "/api/v1/runs", { headers: bearer(fresh) })).status).toBe(200);
    // The new token is the new secret's: the old secret alone does not take it.
    expect((await api("/api/v1/runs", { headers: bearer(fresh) })).status).toBe(401);
    const ended = { TOKEN_SECRET: NEW_SECRET };
    expect((await fetchWith(ended, "/api/v1/runs", { headers: bearer(fresh) })).status).toBe(200);
    const refused = await fetchWith(ended, "/api/v1/runs", { headers: bearer(old) });
    expect(refused.status).toBe(401);
    expect(await refused.json()).toEqual({ detail: "Unauthorized" });
  });

  it("removing the minting key from API_KEYS revokes its tokens; other keys' tokens still work", async () => {
    const alphas = await mint({ scopes: ["read"], session_id: "s1" });
    const betas = await mint({ scopes: ["read"], session_id: "s1" }, BETA);
    const withoutAlpha = JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(env.API_KEYS!)).filter(([, tenant]) => tenant !== "alpha")));
    const revoked = await fetchWith({ API_KEYS: withoutAlpha }, "/api/v1/runs", { headers: bearer(alphas.token) });
    expect(revoked.status).toBe(401);
    expect(await revoked.json()).toEqual({ detail: "Unauthorized" });
    expect((await fetchWith({ API_KEYS: withoutAlpha }, "/api/v1/runs", { headers: bearer(betas.token) })).status).toBe(200);
  });

  it("a token for a tenant its key does not serve is refused", async () => {
    const { token } = await mint({ scopes: ["read"], session_id: "s1" });
    const payload = payloadOf(token);
    const forged = await mintToken(grant({ key: payload.k, tenant: "beta" }), TOKEN_SECRET);
    expect((await api("/api/v1/runs", { headers: bearer(forged) })).status).toBe(401);
  });
});

describe("a stream opened with a token ends when the token expires", () => {
  /** A token of tenant alpha for session s1 that expires in about two seconds. */
  async function expiringSoon(): Promise<{ token: string; expiresAt: number }> {
    const { token } = await mint({ scopes: ["stream"], session_id: "s1" });
    const payload = payloadOf(token);
    const expires = Math.floor(Date.now() / 1000) + 2;
    const grant: Grant = { id: crypto.randomUUID(), tenant: "alpha", key: payload.k, scopes: ["stream"], runs: null, session_id: "s1", tags: null, expires, max_submits: null, concurrency_key: null, priority: null, config: null, agent: null, metadata: null };
    return { token: await mintToken(grant, TOKEN_SECRET), expiresAt: expires * 1000 };
  }

  /** Reads the stream to its end: what it sent, and when it ended. */
  async function readToEnd(res: Response): Promise<{ text: string; endedAt: number }> {
    const text = await res.text();
    return { text, endedAt: Date.now() };
  }

  it.each([
    ["the feed", () => "/api/v1/runs/events"],
    ["a running job's stream", (id: string) => `/api/v1/runs/${id}/stream`],
  ])("%s: closed at the expiry, then refused as expired", async (_, path) => {
    const res = await api("/api/v1/runs", {
      method: "POST",
      headers: { ...JSON_TYPE, ...ALPHA },
      body: JSON.stringify({ prompt: "p", session_id: "s1", config: { simulate: { steps: 1, step_ms: 600_000 } } }),
    });
    const { job_id } = await res.json<{ job_id: string }>();
    const { token, expiresAt } = await expiringSoon();
    const opened = await api(`${path(job_id)}?token=${token}`);
    expect(opened.status).toBe(200);
    const { text, endedAt } = await readToEnd(opened);
    expect(endedAt).toBeGreaterThanOrEqual(expiresAt);
    expect(text).not.toContain("[DONE]");
    const again = await api(`${path(job_id)}?token=${token}`);
    expect(again.status).toBe(401);
    expect(await again.json()).toEqual({ detail: "Token expired" });
    // The job runs on, untouched.
    const job = await (await api(`/api/v1/runs/${job_id}`, { headers: ALPHA })).json<{ status: string }>();
    expect(job.status).toBe("running");
    expect((await api(`/api/v1/runs/${job_id}/cancel`, { method: "POST", headers: ALPHA })).status).toBe(200);
    await runDurableObjectAlarm(runStub(job_id, "alpha"));
  });

  it("a stream that ends before the token does is whole", async () => {
    const id = await finishedJob();
    const { token } = await expiringSoon();
    const stream = await api(`/api/v1/runs/${id}/stream?token=${token}`);
    expect(parseSse(await stream.text()).at(-1)?.data).toBe("[DONE]");
  });
});

describe("?token= in the query", () => {
  it("is taken on the job's stream and the feed", async () => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: ["stream"], session_id: "s1" });
    const stream = await api(`/api/v1/runs/${id}/stream?token=${token}`);
    expect(stream.status).toBe(200);
    expect(parseSse(await stream.text()).at(-1)?.data).toBe("[DONE]");
    const feed = await api(`/api/v1/runs/events?token=${token}`);
    expect(feed.status).toBe(200);
    expect(feed.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    await feed.body!.cancel();
  });

  it("is taken by HEAD on the job's stream and the feed, which answer their headers alone; a token that is not good is refused there too", async () => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: ["stream"], session_id: "s1" });
    for (const path of [`/api/v1/runs/${id}/stream`, "/api/v1/runs/events"]) {
      const head = await api(`${path}?token=${token}`, { method: "HEAD" });
      expect(head.status, path).toBe(200);
      expect(head.headers.get("Content-Type"), path).toMatch(/^text\/event-stream/);
      expect(await head.text(), path).toBe("");
      expect((await api(`${path}?token=${token.slice(0, -2)}xx`, { method: "HEAD" })).status, path).toBe(401);
    }
    // Beyond its reach, as GET: the job of another session is unknown to it.
    const other = await mint({ scopes: ["stream"], session_id: "s2" });
    expect((await api(`/api/v1/runs/${id}/stream?token=${other.token}`, { method: "HEAD" })).status).toBe(404);
  });

  it.each([
    ["GET", ""],
    ["HEAD", ""],
    ["HEAD", "/output"],
    ["GET", "/result"],
    ["GET", "/output"],
    ["POST", "/cancel"],
    ["DELETE", ""],
  ])("is refused on %s <job>%s", async (method, suffix) => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    const res = await api(`/api/v1/runs/${id}${suffix}?token=${token}`, { method });
    expect(res.status).toBe(400);
    // A HEAD's answer has no body to say why.
    if (method !== "HEAD") expect((await res.json<{ detail: string }>()).detail).toMatch(/^\?token= is accepted only by GET \/api\/v1\/runs\/\{id\}\/stream and \/api\/v1\/runs\/events/);
    expect((await api(`/api/v1/runs/${id}`, { headers: ALPHA })).status).toBe(200);
  });

  it("is refused on the list, stats and minting", async () => {
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    for (const [method, path] of [["GET", "/api/v1/runs"], ["GET", "/stats"], ["POST", "/api/v1/tokens"]]) {
      expect((await api(`${path}?token=${token}`, { method, headers: JSON_TYPE, body: method === "POST" ? "{}" : undefined })).status).toBe(400);
    }
  });
});
