/** Scoped tokens: submitting with one (what it fixes of the job, its count of submits, keys and retries). */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { projectionOfKey } from "../../src/tenant/shards";
import { failingStubs, gatedStubs, resetError } from "../faults";
import { api, runStub } from "../helpers";
import { ALPHA, bearer, fetchWith, JSON_TYPE, mint, payloadOf } from "./helpers";

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
    const made = await fetchWith({ PROJECTIONS: failingStubs(env.PROJECTIONS, "submitMade", [1], "before").proxy }, "/api/v1/runs", init);
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
