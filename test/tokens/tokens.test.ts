import { createExecutionContext, env, runDurableObjectAlarm, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { SCOPES, type Scope } from "../../src/schemas";
import { projectionOfKey } from "../../src/tenant/shards";
import { mintToken, TOKEN_PREFIX, type Grant } from "../../src/tokens";
import { failingStubs, gatedStubs, overlay, resetError } from "../faults";
import { api, BASE, parseSse, runStub } from "../helpers";
import { TOKEN_SECRET } from "./protocol";

const ALPHA = { Authorization: "Bearer key-alpha" };
const BETA = { Authorization: "Bearer key-beta" };
const JSON_TYPE = { "content-type": "application/json" };

interface Minted {
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

async function mint(body: Record<string, unknown>, headers: Record<string, string> = ALPHA): Promise<Minted> {
  const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...headers }, body: JSON.stringify(body) });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
}

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** What a token says inside, as signed: its id (`i`) and the id of the key that minted it (`k`). */
const payloadOf = (token: string): { i: string; k: string } => JSON.parse(atob(token.slice(TOKEN_PREFIX.length, token.indexOf(".")).replace(/-/g, "+").replace(/_/g, "/")));

/** A job of tenant alpha (session s1, tags t1 and t2), run to its end. */
async function finishedJob(extra: Record<string, unknown> = {}): Promise<string> {
  const res = await api("/api/v1/runs", {
    method: "POST",
    headers: { ...JSON_TYPE, ...ALPHA },
    body: JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } }, session_id: "s1", tags: ["t1", "t2"], ...extra }),
  });
  expect(res.status).toBe(202);
  const { job_id } = await res.json<{ job_id: string }>();
  for (let i = 0; i < 20; i++) {
    const job = await (await api(`/api/v1/runs/${job_id}`, { headers: ALPHA })).json<{ status: string }>();
    if (job.status === "succeeded") return job_id;
    await runDurableObjectAlarm(runStub(job_id, "alpha"));
  }
  throw new Error("the job did not finish");
}

/** Every route that acts on one job, the scope it needs, and how a token calls it. */
const JOB_ROUTES: [string, string, Scope, string?][] = [
  ["GET", "", "read"],
  ["GET", "/result", "read"],
  ["GET", "/output", "read"],
  ["GET", "/stream", "stream"],
  ["POST", "/cancel", "cancel"],
  ["POST", "/input", "input", JSON.stringify({ action: "approve" })],
  ["POST", "/retry", "submit", "{}"],
  ["DELETE", "", "delete"],
];

function call(id: string, [method, suffix, , body]: (typeof JOB_ROUTES)[number], token: string): Promise<Response> {
  return api(`/api/v1/runs/${id}${suffix}`, { method, headers: { ...JSON_TYPE, ...bearer(token) }, body });
}

/** The Worker with some settings changed, as a deployment with them would answer. */
async function fetchWith(settings: Partial<Env>, path: string, init?: RequestInit): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch!(new Request(`${BASE}${path}`, init) as Request<unknown, IncomingRequestCfProperties>, overlay(env, settings), ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

describe("minting", () => {
  it("answers 201 with the token and what it grants, with the contract's defaults", async () => {
    const before = Date.now();
    const minted = await mint({ scopes: ["read", "submit"], session_id: "s1" });
    expect(minted).toMatchObject({ scopes: ["read", "submit"], runs: null, session_id: "s1", tags: null, max_submits: 1, concurrency_key: null, priority: null, config: null, agent: null, metadata: null });
    expect(minted.token).toMatch(/^ert_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    const ttl = (Date.parse(minted.expires_at) - before) / 1000;
    expect(ttl).toBeGreaterThan(898);
    expect(ttl).toBeLessThanOrEqual(901);
    expect((await mint({ scopes: ["read"], tags: ["t1"] })).max_submits).toBeNull();
    expect((await mint({ scopes: ["submit"] })).runs).toBeNull();
  });

  it("reads a null field as not given, as a backend that sends every field sends it", async () => {
    const minted = await mint({ scopes: ["read", "submit"], session_id: "s1", runs: null, tags: null, ttl_seconds: null, max_submits: null });
    expect(minted).toMatchObject({ scopes: ["read", "submit"], runs: null, session_id: "s1", tags: null, max_submits: 1 });
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

describe("scopes × routes × reach", () => {
  it.each(JOB_ROUTES)("%s <job>%s needs %s: every other scope is refused with 403", async (...route) => {
    const id = await finishedJob();
    for (const scope of SCOPES) {
      const { token } = await mint({ scopes: [scope], runs: [id] });
      const res = await call(id, route, token);
      const body = await res.text();
      if (scope === route[2]) {
        expect([403, 404], `${scope}: ${body}`).not.toContain(res.status);
      } else {
        expect(res.status, `${scope} on ${route[0]} ${route[1]}`).toBe(403);
        expect(JSON.parse(body)).toEqual({ detail: `Token does not allow ${route[2]}` });
      }
    }
  });

  const reaches: [string, boolean, (id: string) => Record<string, unknown>][] = [
    ["its id", true, (id) => ({ runs: [id] })],
    ["another id", false, () => ({ runs: ["run_other"] })],
    ["its session", true, () => ({ session_id: "s1" })],
    ["another session", false, () => ({ session_id: "s2" })],
    ["one of its tags", true, () => ({ tags: ["t2"] })],
    ["all of its tags", true, () => ({ tags: ["t1", "t2"] })],
    ["a tag it lacks", false, () => ({ tags: ["t1", "t3"] })],
    ["its id and session", true, (id) => ({ runs: [id], session_id: "s1" })],
    ["its id and another session", false, (id) => ({ runs: [id], session_id: "s2" })],
    ["its session and another tag", false, () => ({ session_id: "s1", tags: ["t9"] })],
  ];

  it.each(reaches)("a token reaching %s: reached %s", async (_what, reached, reach) => {
    // Only the delete, the last route, changes the job: one job serves every route.
    expect(JOB_ROUTES.at(-1)![0]).toBe("DELETE");
    const id = await finishedJob();
    for (const route of JOB_ROUTES) {
      const { token } = await mint({ scopes: [route[2]], ...reach(id) });
      const res = await call(id, route, token);
      const body = await res.text();
      if (reached) {
        expect(res.status, `${route[0]} ${route[1]}: ${body}`).not.toBe(404);
      } else {
        // Exactly as an unknown id is answered, and nothing was done to the job.
        expect(res.status, `${route[0]} ${route[1]}`).toBe(404);
        expect(JSON.parse(body)).toEqual({ detail: `Job not found: ${id}` });
        expect((await api(`/api/v1/runs/${id}`, { headers: ALPHA })).status).toBe(200);
      }
    }
  });

  it("another tenant's job is unknown to a token even with its id in the reach", async () => {
    const id = await finishedJob();
    const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...BETA }, body: JSON.stringify({ scopes: [...SCOPES], runs: [id] }) });
    const { token } = await res.json<Minted>();
    for (const route of JOB_ROUTES) expect((await call(id, route, token)).status).toBe(404);
  });

  it("stats and bulk operations need a key", async () => {
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    const stats = await api("/stats", { headers: bearer(token) });
    expect(stats.status).toBe(403);
    expect(await stats.json()).toEqual({ detail: "Token does not allow stats" });
    const bulk = await api("/api/v1/runs/bulk/cancel", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ session_id: "s1" }) });
    expect(bulk.status).toBe(403);
    expect(await bulk.json()).toEqual({ detail: "Token does not allow bulk operations" });
  });
});

describe("listing with a token", () => {
  it("lists just the token's session and tags, with exact totals and cursors", async () => {
    const session = `list-${crypto.randomUUID()}`;
    const tagged: string[] = [];
    for (let i = 0; i < 5; i++) tagged.push(await finishedJob({ session_id: session, tags: i % 2 === 0 ? ["even"] : ["odd"] }));
    await finishedJob({ session_id: `${session}-other`, tags: ["even"] });
    const { token } = await mint({ scopes: ["read"], session_id: session });
    const all = await (await api("/api/v1/runs?page_size=2", { headers: bearer(token) })).json<{ total: number; jobs: { job_id: string }[]; next_cursor: string }>();
    expect(all.total).toBe(5);
    const next = await (await api(`/api/v1/runs?page_size=2&cursor=${all.next_cursor}`, { headers: bearer(token) })).json<{ jobs: { job_id: string }[] }>();
    expect([...all.jobs, ...next.jobs].map((j) => j.job_id)).toEqual([...tagged].reverse().slice(0, 4));

    const even = await mint({ scopes: ["read"], session_id: session, tags: ["even"] });
    const evens = await (await api("/api/v1/runs", { headers: bearer(even.token) })).json<{ total: number; jobs: { job_id: string }[] }>();
    expect(evens.total).toBe(3);
    expect(evens.jobs.map((j) => j.job_id)).toEqual([tagged[4], tagged[2], tagged[0]]);

    // Asking for another session leaves nothing; asking for its own is the same list.
    const elsewhere = await (await api(`/api/v1/runs?session_id=${session}-other`, { headers: bearer(token) })).json<{ total: number }>();
    expect(elsewhere.total).toBe(0);
    expect((await (await api(`/api/v1/runs?session_id=${session}`, { headers: bearer(token) })).json<{ total: number }>()).total).toBe(5);
  });

  it("a token limited to runs cannot list or watch (403)", async () => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: ["read", "stream"], runs: [id], session_id: "s1" });
    const list = await api("/api/v1/runs", { headers: bearer(token) });
    expect(list.status).toBe(403);
    expect(await list.json()).toEqual({ detail: "Token does not allow list" });
    const feed = await api(`/api/v1/runs/events?token=${token}`);
    expect(feed.status).toBe(403);
    expect(await feed.json()).toEqual({ detail: "Token does not allow the feed" });
  });
});

describe("submitting with a token", () => {
  it("a job submitted with a token carries its session and tags, and the token reaches it", async () => {
    const { token } = await mint({ scopes: ["submit", "read"], session_id: "browser-1", tags: ["web"] });
    const res = await api("/api/v1/runs", {
      method: "POST",
      headers: { ...JSON_TYPE, ...bearer(token) },
      body: JSON.stringify({ prompt: "p", session_id: "forged", tags: ["other"], config: { simulate: { steps: 1, step_ms: 1 } } }),
    });
    expect(res.status).toBe(202);
    const { job_id } = await res.json<{ job_id: string }>();
    const job = await (await api(`/api/v1/runs/${job_id}`, { headers: bearer(token) })).json<{ session_id: string; tags: string[] }>();
    expect(job.session_id).toBe("browser-1");
    expect(job.tags).toEqual(["web"]);
  });

  it("the line is the token's to say: its concurrency key and priority, else none and the default, whatever the body says", async () => {
    const body = { prompt: "p", priority: 9, concurrency_key: "someone-else", config: { simulate: { steps: 1, step_ms: 1 } }, delay_seconds: 3600 };
    const submit = async (token: string) => {
      const res = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify(body) });
      expect(res.status, await res.clone().text()).toBe(202);
      const { job_id } = await res.json<{ job_id: string }>();
      return (await api(`/api/v1/runs/${job_id}`, { headers: ALPHA })).json<{ job_id: string; priority: number; concurrency_key: string | null }>();
    };
    const pinned = await mint({ scopes: ["submit"], concurrency_key: "user-7", priority: 3, max_submits: 2 });
    expect(pinned).toMatchObject({ concurrency_key: "user-7", priority: 3 });
    expect(await submit(pinned.token)).toMatchObject({ priority: 3, concurrency_key: "user-7" });
    const plain = await mint({ scopes: ["submit"] });
    expect(await submit(plain.token)).toMatchObject({ priority: 5, concurrency_key: null });
    // A key chooses as the body says.
    const res = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify(body) });
    const { job_id } = await res.json<{ job_id: string }>();
    expect(await (await api(`/api/v1/runs/${job_id}`, { headers: ALPHA })).json()).toMatchObject({ priority: 9, concurrency_key: "someone-else" });
    // A retry with the token is placed as the token says too.
    const retryToken = await mint({ scopes: ["submit", "read", "cancel"], session_id: "pinned-retry", concurrency_key: "user-8", max_submits: 2 });
    const first = await submit(retryToken.token);
    expect((await api(`/api/v1/runs/${first.job_id}/cancel`, { method: "POST", headers: bearer(retryToken.token) })).status).toBe(200);
    const retried = await api(`/api/v1/runs/${first.job_id}/retry`, { method: "POST", headers: { ...JSON_TYPE, ...bearer(retryToken.token) }, body: "{}" });
    expect(retried.status).toBe(202);
    const againId = (await retried.json<{ job_id: string }>()).job_id;
    expect(await (await api(`/api/v1/runs/${againId}`, { headers: ALPHA })).json()).toMatchObject({ priority: 5, concurrency_key: "user-8" });
    // Its run slot goes back to the other tests.
    expect((await api(`/api/v1/runs/${againId}/cancel`, { method: "POST", headers: ALPHA })).status).toBe(200);
    await runDurableObjectAlarm(runStub(againId, "alpha"));
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(retryToken.token) })).json()).toMatchObject({ concurrency_key: "user-8", priority: null });
  });

  it("a token's model settings win over the body's and a retry's: its budget holds", async () => {
    const { token } = await mint({ scopes: ["submit", "read"], session_id: "budgeted", config: { max_total_tokens: 5 }, max_submits: 2 });
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json()).toMatchObject({ config: { max_total_tokens: 5 } });
    const body = JSON.stringify({ prompt: "spend freely", config: { max_total_tokens: 1_000_000, simulate: { steps: 2, step_ms: 1 } } });
    const res = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body });
    expect(res.status).toBe(202);
    const { job_id } = await res.json<{ job_id: string }>();
    const ended = async (id: string) => {
      for (let i = 0; i < 10; i++) {
        const job = await (await api(`/api/v1/runs/${id}`, { headers: ALPHA })).json<{ status: string; error: string | null }>();
        if (job.status === "failed" || job.status === "succeeded") return job;
        await runDurableObjectAlarm(runStub(id, "alpha"));
      }
      throw new Error("the job did not end");
    };
    expect(await ended(job_id)).toMatchObject({ status: "failed", error: "Token budget of 5 exceeded at step step_1" });
    // A retry's config does not lift it either.
    const retried = await api(`/api/v1/runs/${job_id}/retry`, {
      method: "POST",
      headers: { ...JSON_TYPE, ...bearer(token) },
      body: JSON.stringify({ config: { max_total_tokens: 1_000_000 } }),
    });
    expect(retried.status).toBe(202);
    expect(await ended((await retried.json<{ job_id: string }>()).job_id)).toMatchObject({ status: "failed", error: "Token budget of 5 exceeded at step step_1" });
    // The same body with a key runs to its end.
    const free = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body });
    expect((await ended((await free.json<{ job_id: string }>()).job_id)).status).toBe("succeeded");
  });

  it("a token's metadata entries win over the body's, so that its user's id can be trusted; the body's other entries are kept", async () => {
    const user = `u-${crypto.randomUUID().slice(0, 8)}`;
    const { token, metadata } = await mint({ scopes: ["submit", "read"], session_id: "metadata-pinned", metadata: { user }, max_submits: 3 });
    expect(metadata).toEqual({ user });
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json()).toMatchObject({ metadata: { user } });
    const submitted = await api("/api/v1/runs", {
      method: "POST",
      headers: { ...JSON_TYPE, ...bearer(token) },
      body: JSON.stringify({ prompt: "p", metadata: { user: "someone-else", note: "kept" }, delay_seconds: 3600 }),
    });
    expect(submitted.status).toBe(202);
    const { job_id } = await submitted.json<{ job_id: string }>();
    expect((await (await api(`/api/v1/runs/${job_id}`, { headers: ALPHA })).json<{ metadata: Record<string, string> }>()).metadata).toEqual({ user, note: "kept" });
    // The backend lists, and erases, its user's jobs by that entry: the browser cannot file a job under another user.
    expect((await (await api(`/api/v1/runs?metadata.user=${user}`, { headers: ALPHA })).json<{ total: number }>()).total).toBe(1);
    expect((await (await api("/api/v1/runs?metadata.user=someone-else", { headers: ALPHA })).json<{ total: number }>()).total).toBe(0);
    // With the token's, a body's entries may not pass the 16 a job holds: 422, nothing made, nothing counted.
    const crowded = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, "v"]));
    const refused = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ prompt: "p", metadata: crowded }) });
    expect(refused.status).toBe(422);
    expect(await refused.json()).toEqual({ detail: [{ loc: ["body", "metadata"], msg: "metadata may hold at most 16 keys, the token's among them", type: "value_error" }] });
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json()).toMatchObject({ submits_left: 2 });
  });

  it("a token's agent runs the jobs it submits, whatever agent the body names", async () => {
    const pinned = await mint({ scopes: ["submit", "read"], session_id: "agent-pinned", agent: "recipe:summarize", max_submits: 3 });
    expect(pinned.agent).toBe("recipe:summarize");
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(pinned.token) })).json()).toMatchObject({ agent: "recipe:summarize", submits_left: 3 });
    const agentOf = async (token: string, body: Record<string, unknown>) => {
      const res = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ prompt: "p", delay_seconds: 3600, ...body }) });
      expect(res.status, await res.clone().text()).toBe(202);
      const { job_id } = await res.json<{ job_id: string }>();
      return (await (await api(`/api/v1/runs/${job_id}`, { headers: ALPHA })).json<{ agent_id: string }>()).agent_id;
    };
    const inline = "roles:\n  anyone:\n    role: Anyone\n    goal: Anything\n    backstory: None\n    tasks:\n      t:\n        description: Whatever the browser wants\n        expected_output: Text\n";
    expect(await agentOf(pinned.token, { agent_yaml: inline })).toBe("recipe:summarize");
    expect(await agentOf(pinned.token, { recipe_name: "triage" })).toBe("recipe:summarize");
    // The body's recipe_config is for the token's recipe: it needs no recipe_name of its own.
    expect(await agentOf(pinned.token, { recipe_config: { temperature: 0.2 } })).toBe("recipe:summarize");
    // An agent file takes no recipe_config: the body's is set aside with its recipe.
    const file = await mint({ scopes: ["submit", "read"], session_id: "agent-pinned", agent: "file:agents.yaml" });
    expect(await agentOf(file.token, { recipe_name: "triage", recipe_config: { temperature: 0.2 } })).toBe("file:agents.yaml");
    // Without a token's agent, a recipe_config with settings still needs a recipe_name; an empty one (PraisonAI's default) does not.
    const bare = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...ALPHA }, body: JSON.stringify({ prompt: "p", recipe_config: { temperature: 0.2 } }) });
    expect(bare.status).toBe(422);
    expect(await bare.json()).toEqual({ detail: [{ loc: ["body", "recipe_config"], msg: "recipe_config needs recipe_name", type: "value_error" }] });
    expect(await agentOf((await mint({ scopes: ["submit"] })).token, { agent_yaml: inline, recipe_config: {} })).toBe("yaml:inline");
  });

  it("an idempotency key sent with a token is that token's own: another's same key makes its own job and learns nothing of the first", async () => {
    const key = `order-${crypto.randomUUID().slice(0, 8)}`;
    const [a, b] = await Promise.all(["user-a", "user-b"].map((session) => mint({ scopes: ["submit", "read"], session_id: session, max_submits: 3 })));
    const send = (headers: Record<string, string>) =>
      api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...headers, "Idempotency-Key": key }, body: JSON.stringify({ prompt: "p", delay_seconds: 3600 }) });
    const first = await send(bearer(a.token));
    expect(first.status).toBe(202);
    const { job_id } = await first.json<{ job_id: string }>();
    // Another user's browser with the same key: its own job, not a 409 naming the first (nor the first, had its body been the same).
    const other = await send(bearer(b.token));
    expect(other.status).toBe(202);
    expect(other.headers.get("Idempotent-Replayed")).toBeNull();
    expect((await other.json<{ job_id: string }>()).job_id).not.toBe(job_id);
    // The backend's key is apart too.
    const keyed = await send(ALPHA);
    expect(keyed.status).toBe(202);
    expect((await keyed.json<{ job_id: string }>()).job_id).not.toBe(job_id);
    // The token that sent it gets its job back, and spends no submit on it.
    const again = await send(bearer(a.token));
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(job_id);
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(a.token) })).json()).toMatchObject({ submits_left: 2 });
  });

  it("a token does not choose where webhooks go: webhook_url → 403, nothing made, nothing counted", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    const res = await api("/api/v1/runs", {
      method: "POST",
      headers: { ...JSON_TYPE, ...bearer(token) },
      body: JSON.stringify({ prompt: "p", webhook_url: "https://hooks.example.com/runs" }),
    });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ detail: "Token does not allow webhook_url" });
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json()).toMatchObject({ submits_left: 1 });
    // "" is no webhook (as PraisonAI's server reads it), and is taken.
    const none = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ prompt: "p", webhook_url: "", delay_seconds: 3600 }) });
    expect(none.status).toBe(202);
  });

  it("20 submits racing on a token allowing 5: exactly 5 are accepted", async () => {
    const session = `race-${crypto.randomUUID()}`;
    const { token } = await mint({ scopes: ["submit", "read"], session_id: session, max_submits: 5 });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } } }) }),
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 202)).toHaveLength(5);
    expect(statuses.filter((s) => s === 403)).toHaveLength(15);
    const refused = answers.find((r) => r.status === 403)!;
    expect(await refused.json()).toEqual({ detail: "Token submit limit reached" });
    const listed = await (await api(`/api/v1/runs?session_id=${session}`, { headers: ALPHA })).json<{ total: number }>();
    expect(listed.total).toBe(5);
  });

  it("a submit sent again under its key while the first is under way, on a token with one submit: both are answered with the one job", async () => {
    for (let round = 0; round < 3; round++) {
      const session = `same-key-${crypto.randomUUID()}`;
      const { token } = await mint({ scopes: ["submit", "read"], session_id: session, max_submits: 1 });
      const send = (key: string) =>
        api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": key }, body: JSON.stringify({ prompt: "p", delay_seconds: 3600 }) });
      const answers = await Promise.all([send("order-1"), send("order-1"), send("order-1")]);
      expect(answers.map((r) => r.status)).toEqual([202, 202, 202]);
      const ids = await Promise.all(answers.map(async (r) => (await r.json<{ job_id: string }>()).job_id));
      expect(new Set(ids).size).toBe(1);
      expect(answers.filter((r) => r.headers.get("Idempotent-Replayed") === "true")).toHaveLength(2);
      // The one submit is spent: another key is refused.
      const other = await send("order-2");
      expect(other.status).toBe(403);
      expect(await other.json()).toEqual({ detail: "Token submit limit reached" });
      expect((await (await api(`/api/v1/runs?session_id=${session}`, { headers: ALPHA })).json<{ total: number }>()).total).toBe(1);
    }
  });

  it("a submit sent again under its key while the first is under way, which then fails: the second makes the job, counted once", async () => {
    const session = `same-key-${crypto.randomUUID()}`;
    const { token } = await mint({ scopes: ["submit", "read"], session_id: session, max_submits: 1 });
    const headers = { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": "order-1" };
    const body = JSON.stringify({ prompt: "p", delay_seconds: 3600 });
    const runs = gatedStubs(env.RUNS, "create", true);
    const first = fetchWith({ RUNS: runs.proxy }, "/api/v1/runs", { method: "POST", headers, body });
    await runs.reached;
    // The first has spent the token's submit and is making its job: the second waits for it.
    const second = api("/api/v1/runs", { method: "POST", headers, body });
    const early = await Promise.race([second.then(() => "answered"), new Promise((r) => setTimeout(() => r("waiting"), 300))]);
    expect(early).toBe("waiting");
    runs.open();
    expect((await first).status).toBe(500);
    const made = await second;
    expect(made.status).toBe(202);
    expect(made.headers.get("Idempotent-Replayed")).toBeNull();
    const { job_id } = await made.json<{ job_id: string }>();
    expect((await api(`/api/v1/runs/${job_id}`, { headers: bearer(token) })).status).toBe(200);
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json()).toMatchObject({ submits_left: 0 });
    expect((await (await api(`/api/v1/runs?session_id=${session}`, { headers: ALPHA })).json<{ total: number }>()).total).toBe(1);
  });

  /** A submit with `token`, under the idempotency key "order-1", of a job that waits. */
  const waitingUnderKey = (token: string) => ({
    method: "POST",
    headers: { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": "order-1" },
    body: JSON.stringify({ prompt: "p", delay_seconds: 3600 }),
  });

  /** A one-submit token whose submit under key "order-1" made no job and could not give its count back, and that submit sent again. */
  async function spentWithoutJob() {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    const init = waitingUnderKey(token);
    const settings = { RUNS: failingStubs(env.RUNS, "create", [1], "before", resetError).proxy, PROJECTIONS: failingStubs(env.PROJECTIONS, "refundSubmit", [1], "before").proxy };
    expect((await fetchWith(settings, "/api/v1/runs", init)).status).toBe(503);
    return { token, sendAgain: () => api("/api/v1/runs", init) };
  }

  it("a key whose submit made no job and whose count could not be given back: a submit sent again under it waits a while, then is refused as the limit says", async () => {
    const { sendAgain } = await spentWithoutJob();
    const started = Date.now();
    const again = await sendAgain();
    expect(again.status).toBe(403);
    expect(await again.json()).toEqual({ detail: "Token submit limit reached" });
    expect(Date.now() - started).toBeGreaterThan(5_000);
  });

  it("a key counted over a minute ago whose submit made no job: a submit sent again under it past the limit is refused at once", async () => {
    const { token, sendAgain } = await spentWithoutJob();
    // A minute on: the token's counter no longer takes that submit for one under way.
    const { i: tokenId } = payloadOf(token);
    await runInDurableObject(env.PROJECTIONS.getByName(projectionOfKey(env, "alpha", tokenId)), (_instance, state) => {
      state.storage.sql.exec("UPDATE token_keys SET under_way_until = under_way_until - 60000 WHERE token_id = ?", tokenId);
    });
    const started = Date.now();
    const again = await sendAgain();
    expect(again.status).toBe(403);
    expect(await again.json()).toEqual({ detail: "Token submit limit reached" });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("a key whose submit made its job, since deleted: a submit sent again under it past the limit is refused at once", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    const init = waitingUnderKey(token);
    const made = await api("/api/v1/runs", init);
    expect(made.status).toBe(202);
    const { job_id } = await made.json<{ job_id: string }>();
    expect((await api(`/api/v1/runs/${job_id}?force=true`, { method: "DELETE", headers: ALPHA })).status).toBe(204);
    const started = Date.now();
    const again = await api("/api/v1/runs", init);
    expect(again.status).toBe(403);
    expect(await again.json()).toEqual({ detail: "Token submit limit reached" });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("a key whose job was made but which the counter could not let go of: the submit's answer stands, its job made and counted", async () => {
    const { token } = await mint({ scopes: ["submit", "read"], session_id: `settle-${crypto.randomUUID()}`, max_submits: 1 });
    const init = waitingUnderKey(token);
    const made = await fetchWith({ PROJECTIONS: failingStubs(env.PROJECTIONS, "releaseSubmitKey", [1], "before").proxy }, "/api/v1/runs", init);
    expect(made.status).toBe(202);
    const { job_id } = await made.json<{ job_id: string }>();
    expect((await api(`/api/v1/runs/${job_id}`, { headers: bearer(token) })).status).toBe(200);
    expect(await (await api("/api/v1/tokens/verify", { headers: bearer(token) })).json()).toMatchObject({ submits_left: 0 });
    // Sent again, it is answered with that job.
    const again = await api("/api/v1/runs", init);
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(job_id);
  });

  it("a submit that makes no job does not count: a refused body, an idempotent replay", async () => {
    const { token } = await mint({ scopes: ["submit"], max_submits: 1 });
    const headers = { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": `k-${crypto.randomUUID()}` };
    const bad = await api("/api/v1/runs", { method: "POST", headers, body: JSON.stringify({ prompt: "" }) });
    expect(bad.status).toBe(422);
    const body = JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } } });
    expect((await api("/api/v1/runs", { method: "POST", headers, body })).status).toBe(202);
    const replay = await api("/api/v1/runs", { method: "POST", headers, body });
    expect(replay.status).toBe(202);
    expect(replay.headers.get("Idempotent-Replayed")).toBe("true");
    const second = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body });
    expect(second.status).toBe(403);
  });

  it("a submit that fails part-way does not count; when giving the count back fails too, the submit's own failure is the answer", async () => {
    const body = JSON.stringify({ prompt: "p", config: { simulate: { steps: 1, step_ms: 1 } } });
    const submitWith = (token: string, settings: Partial<Env>) => fetchWith(settings, "/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body });

    const given = await mint({ scopes: ["submit"], max_submits: 1 });
    expect((await submitWith(given.token, { RUNS: failingStubs(env.RUNS, "create", [1], "before").proxy })).status).toBe(500);
    expect((await submitWith(given.token, {})).status).toBe(202);

    const kept = await mint({ scopes: ["submit"], max_submits: 1 });
    const settings = { RUNS: failingStubs(env.RUNS, "create", [1], "before", resetError).proxy, PROJECTIONS: failingStubs(env.PROJECTIONS, "refundSubmit", [1], "before").proxy };
    const failed = await submitWith(kept.token, settings);
    expect(failed.status).toBe(503);
    expect(await failed.json()).toEqual({ detail: "Service unavailable; retry shortly" });
    // The count could not be given back: the token's one submit is spent.
    expect((await submitWith(kept.token, {})).status).toBe(403);
  });

  it("a retry sent again under its key while the first is under way, on a token with one submit: both are answered with the one job, and no copied output is left behind", async () => {
    const started = new Date();
    const failed = await api("/api/v1/runs", {
      method: "POST",
      headers: { ...JSON_TYPE, ...ALPHA },
      body: JSON.stringify({ prompt: "p", session_id: "retry-twice", config: { simulate: { steps: 3, step_ms: 1, fail_at_step: 3 } } }),
    });
    const { job_id } = await failed.json<{ job_id: string }>();
    for (let i = 0; i < 10; i++) await runDurableObjectAlarm(runStub(job_id, "alpha"));
    const { token } = await mint({ scopes: ["submit", "read"], session_id: "retry-twice", max_submits: 1 });
    const retry = () => api(`/api/v1/runs/${job_id}/retry`, { method: "POST", headers: { ...JSON_TYPE, ...bearer(token), "Idempotency-Key": "again" }, body: "{}" });
    const answers = await Promise.all([retry(), retry(), retry()]);
    expect(answers.map((r) => r.status)).toEqual([202, 202, 202]);
    const ids = new Set(await Promise.all(answers.map(async (r) => (await r.json<{ job_id: string }>()).job_id)));
    expect(ids.size).toBe(1);
    // The outputs written since: the failed job's, and the copies of its two finished steps that
    // each retry made, of which only the job made keeps its own.
    const written = new Set<string>();
    for (let cursor: string | undefined, page; (page = await env.OUTPUTS.list({ prefix: "runs/alpha/", cursor })); cursor = page.cursor) {
      for (const object of page.objects) if (object.uploaded >= started) written.add(object.key.split("/")[2]);
      if (!page.truncated) break;
    }
    expect([...written].sort()).toEqual([job_id, ...ids].sort());
    // The one job runs to its end, giving its run slot back to the tests after this one.
    const [made] = ids;
    for (let i = 0; i < 10; i++) await runDurableObjectAlarm(runStub(made, "alpha"));
    expect((await (await api(`/api/v1/runs/${made}`, { headers: ALPHA })).json<{ status: string }>()).status).toBe("failed");
  });

  it("a retry is a submit: it needs the scope, counts, and the new job stays in reach", async () => {
    const failed = await api("/api/v1/runs", {
      method: "POST",
      headers: { ...JSON_TYPE, ...ALPHA },
      body: JSON.stringify({ prompt: "p", session_id: "retry-s", config: { simulate: { steps: 2, step_ms: 1, fail_at_step: 2 } } }),
    });
    const { job_id } = await failed.json<{ job_id: string }>();
    for (let i = 0; i < 10; i++) await runDurableObjectAlarm(runStub(job_id, "alpha"));
    const { token } = await mint({ scopes: ["submit", "read"], session_id: "retry-s", max_submits: 1 });
    const retried = await api(`/api/v1/runs/${job_id}/retry`, { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: "{}" });
    expect(retried.status).toBe(202);
    const { job_id: next } = await retried.json<{ job_id: string }>();
    expect((await api(`/api/v1/runs/${next}`, { headers: bearer(token) })).status).toBe(200);
    const again = await api(`/api/v1/runs/${job_id}/retry`, { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: "{}" });
    expect(again.status).toBe(403);
    expect(await again.json()).toEqual({ detail: "Token submit limit reached" });
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

  it.each([
    ["GET", ""],
    ["GET", "/result"],
    ["GET", "/output"],
    ["POST", "/cancel"],
    ["DELETE", ""],
  ])("is refused on %s <job>%s", async (method, suffix) => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    const res = await api(`/api/v1/runs/${id}${suffix}?token=${token}`, { method });
    expect(res.status).toBe(400);
    expect((await res.json<{ detail: string }>()).detail).toMatch(/^\?token= is accepted only by GET \/api\/v1\/runs\/\{id\}\/stream and \/api\/v1\/runs\/events/);
    expect((await api(`/api/v1/runs/${id}`, { headers: ALPHA })).status).toBe(200);
  });

  it("is refused on the list, stats and minting", async () => {
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    for (const [method, path] of [["GET", "/api/v1/runs"], ["GET", "/stats"], ["POST", "/api/v1/tokens"]]) {
      expect((await api(`${path}?token=${token}`, { method, headers: JSON_TYPE, body: method === "POST" ? "{}" : undefined })).status).toBe(400);
    }
  });
});
