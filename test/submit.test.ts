import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../src/app";
import { overlay } from "./faults";
import { api, BASE, drive, getJob, post, submit } from "./helpers";

describe("POST /api/v1/runs", () => {
  it("accepts a job: 202, the contract's body, Location and Retry-After", async () => {
    const res = await post("/api/v1/runs", { prompt: "Summarise AI news", session_id: "s-1", metadata: { team: "a" } });
    expect(res.status).toBe(202);
    const body = await res.json<Record<string, string>>();
    expect(body.job_id).toMatch(/^run_[A-Za-z0-9]{24,}$/);
    // A slot is free: the job holds it from the start.
    expect(body.status).toBe("running");
    expect(body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(body.poll_url).toBe(`${BASE}/api/v1/runs/${body.job_id}`);
    expect(body.stream_url).toBe(`${body.poll_url}/stream`);
    expect(res.headers.get("Location")).toBe(body.poll_url);
    expect(res.headers.get("Retry-After")).toBe("2");

    const job = await getJob(body.job_id);
    expect(job).toMatchObject({
      job_id: body.job_id,
      status: "running",
      session_id: "s-1",
      metadata: { team: "a" },
      agent_id: "file:agents.yaml",
      retry_after: 2,
      started_at: expect.any(String),
      completed_at: null,
      cancelled_at: null,
      error: null,
      expires_at: null,
      progress: { percentage: 0, current_step: null, steps_completed: 0, steps_total: 3 },
    });
  });

  it("gives every job a distinct unguessable id", async () => {
    const ids = await Promise.all(Array.from({ length: 20 }, () => submit()));
    expect(new Set(ids).size).toBe(20);
  });

  it("ignores unknown fields", async () => {
    const res = await post("/api/v1/runs", { prompt: "x", something_else: 1 });
    expect(res.status).toBe(202);
  });

  it("takes PraisonAI's request model as it dumps itself: every optional field null, recipe_config {}", async () => {
    const dumped = {
      prompt: "x",
      agent_file: null,
      agent_yaml: null,
      recipe_name: null,
      recipe_config: {},
      framework: null,
      config: {},
      webhook_url: null,
      timeout: 3600,
      session_id: null,
      idempotency_key: null,
      idempotency_scope: "none",
    };
    const res = await post("/api/v1/runs", dumped);
    expect(res.status).toBe(202);
    const { job_id } = await res.json<{ job_id: string }>();
    expect(await getJob(job_id)).toMatchObject({ agent_id: "file:agents.yaml", webhook: null });
  });

  it("reads an empty optional text field as not given, as PraisonAI does", { timeout: 30_000 }, async () => {
    const empty = { framework: "", agent_file: "", agent_yaml: "", recipe_name: "", webhook_url: "", idempotency_key: "" };
    const ids: string[] = [];
    for (const _ of [1, 2]) {
      const res = await post("/api/v1/runs", { prompt: "x", session_id: "empty-fields", ...empty });
      expect(res.status).toBe(202);
      expect(res.headers.get("Idempotent-Replayed")).toBeNull();
      ids.push((await res.json<{ job_id: string }>()).job_id);
    }
    // No idempotency key: the same body twice is two jobs.
    expect(new Set(ids).size).toBe(2);
    // The default agent, and no webhook: one owed would show its delivery once the job ends.
    for (const id of ids) expect(await drive(id)).toMatchObject({ status: "succeeded", agent_id: "file:agents.yaml", webhook: null });
  });

  it("names an inline agent definition in agent_id", async () => {
    const agent_yaml = "roles:\n  r:\n    role: R\n    goal: G\n    backstory: B\n    tasks:\n      t:\n        description: D\n        expected_output: E\n";
    const res = await post("/api/v1/runs", { prompt: "x", agent_yaml });
    const { job_id } = await res.json<{ job_id: string }>();
    expect((await getJob(job_id)).agent_id).toBe("yaml:inline");
  });
});

describe("idempotency", () => {
  const body = { prompt: "same work", config: { simulate: { step_ms: 1, steps: 1 } } };

  it("replays the same job for the same key and body, with its current status", async () => {
    const first = await post("/api/v1/runs", body, { "Idempotency-Key": "k-replay" });
    const { job_id } = await first.json<{ job_id: string }>();
    expect(first.headers.get("Idempotent-Replayed")).toBeNull();
    await drive(job_id);

    const again = await post("/api/v1/runs", body, { "Idempotency-Key": "k-replay" });
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect(await again.json()).toMatchObject({ job_id, status: "succeeded" });
  });

  it("treats the body field like the header, and the header wins", async () => {
    const first = await post("/api/v1/runs", { ...body, idempotency_key: "k-field" });
    const { job_id } = await first.json<{ job_id: string }>();
    const viaHeader = await post("/api/v1/runs", { ...body, idempotency_key: "ignored" }, { "Idempotency-Key": "k-field" });
    expect(viaHeader.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await viaHeader.json<{ job_id: string }>()).job_id).toBe(job_id);
  });

  it("takes the same body with its keys in another order, at every depth, for the same request", async () => {
    const first = await post("/api/v1/runs", { prompt: "ordered", metadata: { a: "1", b: "2" }, config: { simulate: { step_ms: 1, steps: 2 } } }, { "Idempotency-Key": "k-order" });
    const { job_id } = await first.json<{ job_id: string }>();
    const reordered = await post("/api/v1/runs", { config: { simulate: { steps: 2, step_ms: 1 } }, metadata: { b: "2", a: "1" }, prompt: "ordered" }, { "Idempotency-Key": "k-order" });
    expect(reordered.status).toBe(202);
    expect(reordered.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await reordered.json<{ job_id: string }>()).job_id).toBe(job_id);
  });

  it("answers 409 with the job's id and status for the same key and another body", async () => {
    const first = await post("/api/v1/runs", body, { "Idempotency-Key": "k-conflict" });
    const { job_id } = await first.json<{ job_id: string }>();
    const other = await post("/api/v1/runs", { ...body, prompt: "other work" }, { "Idempotency-Key": "k-conflict" });
    expect(other.status).toBe(409);
    expect(await other.json()).toEqual({
      detail: "Job already exists with this idempotency key",
      job_id,
      status: "running",
      message: "Job already exists with this idempotency key",
    });
  });

  it("frees the key when its job is deleted", async () => {
    const first = await post("/api/v1/runs", body, { "Idempotency-Key": "k-freed" });
    const { job_id } = await first.json<{ job_id: string }>();
    await drive(job_id);
    expect((await api(`/api/v1/runs/${job_id}`, { method: "DELETE" })).status).toBe(204);

    const again = await post("/api/v1/runs", { ...body, prompt: "new work" }, { "Idempotency-Key": "k-freed" });
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBeNull();
    expect((await again.json<{ job_id: string }>()).job_id).not.toBe(job_id);
  });

  it("rejects an over-long Idempotency-Key header", async () => {
    const res = await post("/api/v1/runs", body, { "Idempotency-Key": "k".repeat(257) });
    expect(res.status).toBe(400);
    expect((await res.json<{ detail: string }>()).detail).toBe("Idempotency-Key must be 1 to 256 characters");
  });
});

describe("bad submissions", () => {
  async function expectDetail(res: Response, status: number) {
    expect(res.status).toBe(status);
    const body = await res.json<{ detail: unknown }>();
    expect(body.detail).toBeTruthy();
    return body.detail;
  }

  async function jobCount(): Promise<number> {
    return (await env.PROJECTIONS.getByName("default").stats()).total_jobs;
  }

  it("malformed JSON → 400", async () => {
    const before = await jobCount();
    expect(await expectDetail(await post("/api/v1/runs", '{"prompt": "x",'), 400)).toBe("Malformed JSON in request body");
    expect(await jobCount()).toBe(before);
  });

  it("a non-JSON content type → 400", async () => {
    const before = await jobCount();
    for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
      const res = await api("/api/v1/runs", { method: "POST", headers: { "content-type": type }, body: '{"prompt":"x"}' });
      expect(await expectDetail(res, 400)).toBe("Content-Type must be application/json");
    }
    expect(await jobCount()).toBe(before);
  });

  it("a JSON content type in any of its spellings is read: with a charset, in capitals, or a +json type", async () => {
    for (const type of ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json", "application/merge-patch+json"]) {
      const res = await api("/api/v1/runs", { method: "POST", headers: { "content-type": type }, body: JSON.stringify({ prompt: "typed", session_id: "typed" }) });
      expect(res.status, type).toBe(202);
    }
  });

  it("a body naming no content type is read as JSON, as FastAPI reads it (Python's requests.post(url, data=...))", async () => {
    // A body of bytes: fetch names no type for it (a string body it would call text/plain).
    const bytes = (text: string) => new TextEncoder().encode(text);
    const res = await api("/api/v1/runs", { method: "POST", body: bytes('{"prompt":"typeless","session_id":"typeless"}') });
    expect(res.status).toBe(202);
    const { job_id } = await res.json<{ job_id: string }>();
    expect((await getJob(job_id)).session_id).toBe("typeless");
    const before = await jobCount();
    expect(await expectDetail(await api("/api/v1/runs", { method: "POST", body: bytes('{"prompt":') }), 400)).toBe("Malformed JSON in request body");
    expect(await jobCount()).toBe(before);
  });

  it("invalid UTF-8 → 400", async () => {
    const res = await api("/api/v1/runs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d]),
    });
    await expectDetail(res, 400);
  });

  it("missing prompt → 422 in the FastAPI shape", async () => {
    const detail = await expectDetail(await post("/api/v1/runs", {}), 422);
    expect(detail).toEqual([{ loc: ["body", "prompt"], msg: "Field required", type: "missing" }]);
  });

  it.each([
    ["empty prompt", { prompt: "" }, ["body", "prompt"]],
    ["blank prompt", { prompt: "   " }, ["body", "prompt"]],
    ["prompt of the wrong type", { prompt: 42 }, ["body", "prompt"]],
    ["timeout negative", { prompt: "x", timeout: -1 }, ["body", "timeout"]],
    ["timeout over a day", { prompt: "x", timeout: 86401 }, ["body", "timeout"]],
    ["timeout not an integer", { prompt: "x", timeout: "soon" }, ["body", "timeout"]],
    ["another framework", { prompt: "x", framework: "crewai" }, ["body", "framework"]],
    ["eleven tags", { prompt: "x", tags: Array.from({ length: 11 }, (_, i) => `t${i}`) }, ["body", "tags"]],
    ["a tag with a space", { prompt: "x", tags: ["two words"] }, ["body", "tags", 0]],
    ["a tag over 64 characters", { prompt: "x", tags: ["t".repeat(65)] }, ["body", "tags", 0]],
    ["tags not a list", { prompt: "x", tags: "nightly" }, ["body", "tags"]],
    ["session_id too long", { prompt: "x", session_id: "s".repeat(257) }, ["body", "session_id"]],
    ["metadata with a non-string value", { prompt: "x", metadata: { a: 1 } }, ["body", "metadata", "a"]],
    ["metadata with 17 keys", { prompt: "x", metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"])) }, ["body", "metadata"]],
    ["config not an object", { prompt: "x", config: [] }, ["body", "config"]],
    ["config's model empty", { prompt: "x", config: { model: "" } }, ["body", "config", "model"]],
    ["config's model not a string", { prompt: "x", config: { model: 4 } }, ["body", "config", "model"]],
    ["simulate steps 0", { prompt: "x", config: { simulate: { steps: 0 } } }, ["body", "config", "simulate", "steps"]],
    ["fail_at_step past the job's steps", { prompt: "x", config: { simulate: { steps: 2, fail_at_step: 3 } } }, ["body", "config", "simulate", "fail_at_step"]],
    ["input_at_step past the 3 steps of the default", { prompt: "x", config: { simulate: { input_at_step: 4 } } }, ["body", "config", "simulate", "input_at_step"]],
    ["a knob the simulated runner does not have (misspelt)", { prompt: "x", config: { simulate: { stepms: 5 } } }, ["body", "config", "simulate"]],
    ["webhook_url not http", { prompt: "x", webhook_url: "ftp://example.com/hook" }, ["body", "webhook_url"]],
    ["webhook_url a number", { prompt: "x", webhook_url: 7 }, ["body", "webhook_url"]],
    ["recipe_config with keys but no recipe", { prompt: "x", recipe_config: { model: "m" } }, ["body", "recipe_config"]],
    ["a body that is an array", [], ["body"]],
    ["priority over 9", { prompt: "x", priority: 10 }, ["body", "priority"]],
    ["priority negative", { prompt: "x", priority: -1 }, ["body", "priority"]],
    ["priority not an integer", { prompt: "x", priority: 4.5 }, ["body", "priority"]],
    ["priority a string", { prompt: "x", priority: "high" }, ["body", "priority"]],
    ["concurrency_key empty", { prompt: "x", concurrency_key: "" }, ["body", "concurrency_key"]],
    ["concurrency_key too long", { prompt: "x", concurrency_key: "k".repeat(129) }, ["body", "concurrency_key"]],
    ["concurrency_key a number", { prompt: "x", concurrency_key: 7 }, ["body", "concurrency_key"]],
    ["delay_seconds 0", { prompt: "x", delay_seconds: 0 }, ["body", "delay_seconds"]],
    ["delay_seconds over 30 days", { prompt: "x", delay_seconds: 2_592_001 }, ["body", "delay_seconds"]],
    ["delay_seconds a string", { prompt: "x", delay_seconds: "60" }, ["body", "delay_seconds"]],
    ["start_after not a time", { prompt: "x", start_after: "tomorrow" }, ["body", "start_after"]],
    ["start_after a number", { prompt: "x", start_after: 1767225600 }, ["body", "start_after"]],
    ["start_after without an offset", { prompt: "x", start_after: "2030-01-01T00:00:00" }, ["body", "start_after"]],
    ["start_after a date alone", { prompt: "x", start_after: "2030-01-01" }, ["body", "start_after"]],
    ["start_after a day its month lacks", { prompt: "x", start_after: "2026-02-30T00:00:00Z" }, ["body", "start_after"]],
    ["start_after over 30 days ahead", { prompt: "x", start_after: new Date(Date.now() + 30 * 86_400_000 + 60_000).toISOString() }, ["body", "start_after"]],
    ["both delay_seconds and start_after", { prompt: "x", delay_seconds: 60, start_after: "2020-01-01T00:00:00Z" }, ["body", "start_after"]],
    ["queue_ttl_seconds 0", { prompt: "x", queue_ttl_seconds: 0 }, ["body", "queue_ttl_seconds"]],
    ["queue_ttl_seconds over 30 days", { prompt: "x", queue_ttl_seconds: 2_592_001 }, ["body", "queue_ttl_seconds"]],
  ])("%s → 422 naming the field", async (_name, payload, loc) => {
    const before = await jobCount();
    const detail = (await expectDetail(await post("/api/v1/runs", payload), 422)) as { loc: unknown[]; msg: string }[];
    expect(detail.map((d) => d.loc)).toContainEqual(loc);
    expect(detail.every((d) => typeof d.msg === "string" && d.msg.length > 0)).toBe(true);
    expect(await jobCount()).toBe(before);
  });

  it("metadata or config holding the key __proto__ → 422 naming it, not dropped without a word", async () => {
    const before = await jobCount();
    const metadata = await expectDetail(await post("/api/v1/runs", '{"prompt":"x","metadata":{"team":"a","__proto__":"x"}}'), 422);
    expect(metadata).toEqual([{ loc: ["body", "metadata", "__proto__"], msg: "a metadata key may not be __proto__", type: "custom" }]);
    const config = await expectDetail(await post("/api/v1/runs", '{"prompt":"x","config":{"__proto__":{"simulate":{"steps":7}}}}'), 422);
    expect(config).toEqual([{ loc: ["body", "config", "__proto__"], msg: "a config key may not be __proto__", type: "custom" }]);
    expect(await jobCount()).toBe(before);
  });

  it("a start_after refused says what was expected", async () => {
    const messages = async (start_after: string) =>
      ((await expectDetail(await post("/api/v1/runs", { prompt: "x", start_after }), 422)) as { msg: string }[]).map((d) => d.msg);
    expect(await messages("2030-01-01T09:00:00")).toEqual(["Invalid input: expected an ISO 8601 time with its offset, such as 2027-01-01T09:00:00Z"]);
    expect(await messages("9999-12-31T23:59:59Z")).toEqual(["Too late: expected a time at most 2592000 seconds from now"]);
  });

  it("a number past any integer's range is refused once, by the field's own limit", async () => {
    const refusals = async (payload: Record<string, unknown>) => expectDetail(await post("/api/v1/runs", { prompt: "x", ...payload }), 422);
    expect(await refusals({ priority: 1e20 })).toEqual([{ loc: ["body", "priority"], msg: "Too big: expected number to be <=9", type: "too_big" }]);
    expect(await refusals({ priority: -1e20 })).toEqual([{ loc: ["body", "priority"], msg: "Too small: expected number to be >=0", type: "too_small" }]);
    expect(await refusals({ delay_seconds: 1e300 })).toEqual([
      { loc: ["body", "delay_seconds"], msg: "Too big: expected number to be <=2592000", type: "too_big" },
    ]);
    expect(await refusals({ config: { simulate: { steps: 2 ** 60 } } })).toEqual([
      { loc: ["body", "config", "simulate", "steps"], msg: "Too big: expected number to be <=100", type: "too_big" },
    ]);
  });

  it("timeout 0 means the default of an hour", async () => {
    const res = await post("/api/v1/runs", { prompt: "x", timeout: 0 });
    expect(res.status).toBe(202);
  });

  it("an agent_file outside the agents folder → 400", async () => {
    for (const agent_file of ["../secrets.yaml", "/etc/passwd.yaml", "a/../../b.yaml", "agents.txt"]) {
      const detail = await expectDetail(await post("/api/v1/runs", { prompt: "x", agent_file }), 400);
      expect(detail).toContain("agent_file must name a YAML file inside the agents folder");
    }
  });

  it("a body over 1 MiB → 413, with or without a Content-Length", async () => {
    const big = JSON.stringify({ prompt: "x".repeat(1024 * 1024 + 10) });
    await expectDetail(await post("/api/v1/runs", big), 413);
    const chunked = new ReadableStream({
      start(controller) {
        const chunk = new TextEncoder().encode(big.slice(0, 512 * 1024));
        controller.enqueue(chunk);
        controller.enqueue(chunk);
        controller.enqueue(chunk);
        controller.close();
      },
    });
    const res = await api("/api/v1/runs", { method: "POST", headers: { "content-type": "application/json" }, body: chunked });
    await expectDetail(res, 413);
  });
});

describe("a job too large for its object to store", () => {
  // A deployment that raised MAX_BODY_BYTES to its greatest: the body is accepted, the job's spec is one SQLite row.
  const submitLarge = (body: unknown) =>
    app.request(
      "http://localhost/api/v1/runs",
      { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) },
      overlay(env, { MAX_BODY_BYTES: String(2 * 1024 * 1024) }),
    );
  const total = async () => (await (await api("/api/v1/runs?page_size=1")).json<{ total: number }>()).total;

  it.each([
    ["2,050,000 ASCII characters", "x".repeat(2_050_000)],
    ["1,010,000 two-byte characters (2,020,000 bytes)", "é".repeat(1_010_000)],
  ])("a prompt of %s → 413 naming its size as stored, and nothing stored", async (_what, prompt) => {
    const before = await total();
    const res = await submitLarge({ prompt, config: { simulate: { steps: 1, step_ms: 1 } } });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({
      detail: "Job too large: its prompt, agent and config come to more than the 2000000 bytes a job may hold as stored (an agent's role, goal and backstory are stored with each of its tasks)",
    });
    expect(await total()).toBe(before);
  });

  it("one just under the limit is stored and runs", async () => {
    const res = await submitLarge({ prompt: "x".repeat(1_990_000), config: { simulate: { steps: 1, step_ms: 1 } } });
    expect(res.status).toBe(202);
    expect((await drive((await res.json<{ job_id: string }>()).job_id)).status).toBe("succeeded");
  });
});
