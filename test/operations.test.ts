/** What operators rely on: request ids, JSON log lines, metrics data points, /health and GET /. */
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import worker from "../src/index";
import { hex, sha256 } from "../src/digest";
import { overlay, withBindings } from "./faults";
import { api, BASE, drive, driveTo, finished, post, submit } from "./helpers";

/** Every JSON line the Worker and the objects log while a test runs (they share this isolate). */
let lines: Record<string, unknown>[] = [];
beforeEach(() => {
  lines = [];
  for (const level of ["log", "error"] as const) {
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      const text = String(args[0]);
      if (text.startsWith("{")) lines.push(JSON.parse(text) as Record<string, unknown>);
    });
  }
});
afterEach(() => vi.restoreAllMocks());

const ofEvent = (event: string) => lines.filter((l) => l.event === event);

describe("request ids", () => {
  it("every answer carries one: found, not found, refused and failed validation alike", async () => {
    const answers = [await api("/health"), await api("/api/v1/runs/run_nothere"), await api("/nowhere"), await post("/api/v1/runs", {})];
    expect(answers.map((r) => r.status)).toEqual([200, 404, 404, 422]);
    const ids = answers.map((r) => r.headers.get("X-Request-Id"));
    for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("a well-formed incoming id is echoed; a malformed one is replaced", async () => {
    const kept = await api("/health", { headers: { "X-Request-Id": "edge-7f3a9c21.retry:2" } });
    expect(kept.headers.get("X-Request-Id")).toBe("edge-7f3a9c21.retry:2");
    for (const bad of ["short", "has spaces in it", "x".repeat(129), "quote\"inside-it"]) {
      const replaced = await api("/health", { headers: { "X-Request-Id": bad } });
      expect(replaced.headers.get("X-Request-Id")).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it("answers a handler makes itself carry one too: a stream, an output's bytes, a 304, a HEAD, the feed and a CORS preflight", async () => {
    const id = await finished({ steps: 1, step_ms: 0 });
    const output = await api(`/api/v1/runs/${id}/output`);
    expect(output.status).toBe(200);
    const etag = output.headers.get("ETag")!;
    await output.arrayBuffer();
    const stream = await api(`/api/v1/runs/${id}/stream`, { headers: { "X-Request-Id": "stream-request-0001" } });
    expect(await stream.text()).toContain("[DONE]");
    const answers = [
      output,
      await api(`/api/v1/runs/${id}/output`, { headers: { "If-None-Match": etag } }),
      await api(`/api/v1/runs/${id}/output`, { method: "HEAD" }),
      await api("/api/v1/runs/events", { method: "HEAD" }),
      await api("/api/v1/runs", { method: "OPTIONS", headers: { Origin: "http://localhost:3000", "Access-Control-Request-Method": "POST" } }),
    ];
    expect(answers.map((r) => r.status)).toEqual([200, 304, 200, 200, 204]);
    const ids = answers.map((r) => r.headers.get("X-Request-Id"));
    for (const each of ids) expect(each).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Set(ids).size).toBe(ids.length);
    expect(stream.headers.get("X-Request-Id")).toBe("stream-request-0001");
  });
});

describe("log lines", () => {
  it("one per request with its fields, the route as a template and the job it acted on", async () => {
    const id = await submit();
    await api(`/api/v1/runs/${id}`, { headers: { "X-Request-Id": "poll-request-0001" } });
    await api("/api/v1/runs?page_size=1");
    const requests = ofEvent("request");
    expect(requests).toHaveLength(3);
    for (const line of requests) {
      expect(Object.keys(line).sort()).toEqual(["duration_ms", "event", "job_id", "method", "request_id", "route", "status", "tenant"]);
      expect(line.tenant).toBe("default");
      expect(line.duration_ms).toBeTypeOf("number");
    }
    expect(requests.map((l) => [l.method, l.route, l.status, l.job_id])).toEqual([
      ["POST", "/api/v1/runs", 202, id],
      ["GET", "/api/v1/runs/:id", 200, id],
      ["GET", "/api/v1/runs", 200, null],
    ]);
    expect(requests[1].request_id).toBe("poll-request-0001");
  });

  it("one per transition, carrying the submit's request id from start to end", async () => {
    const res = await post("/api/v1/runs", { prompt: "follow me", config: { simulate: { steps: 2, step_ms: 1 } } }, { "X-Request-Id": "submit-request-0001" });
    const { job_id } = await res.json<{ job_id: string }>();
    await drive(job_id);
    const transitions = ofEvent("transition").filter((l) => l.job_id === job_id);
    expect(transitions.map((l) => [l.from, l.to, l.step, l.error])).toEqual([
      ["queued", "running", 0, null],
      ["running", "succeeded", 2, null],
    ]);
    for (const line of transitions) {
      expect(line).toMatchObject({ tenant: "default", request_id: "submit-request-0001" });
    }
    expect(ofEvent("request")[0]).toMatchObject({ request_id: "submit-request-0001", job_id });
  });

  it("a failed job's transition names its error", async () => {
    const id = await submit({ steps: 2, fail_at_step: 2 });
    await drive(id);
    const [ended] = ofEvent("transition").filter((l) => l.job_id === id && l.to === "failed");
    expect(ended).toMatchObject({ from: "running", step: 1 });
    expect(String(ended.error)).toContain("step 2");
  });

  it("a rejection's transition names the step, not the person's words", async () => {
    const id = await submit({ steps: 2, input_at_step: 1 });
    await driveTo(id, "awaiting_input");
    const words = "words-of-a-person-never-logged";
    const res = await post(`/api/v1/runs/${id}/input`, { action: "reject", input: words });
    expect(await res.json()).toMatchObject({ status: "failed", error: `Rejected at step step_1: ${words}` });
    const [ended] = ofEvent("transition").filter((l) => l.job_id === id && l.to === "failed");
    expect(ended).toMatchObject({ from: "awaiting_input", step: 0, error: "Rejected at step step_1" });
    expect(JSON.stringify(lines)).not.toContain(words);
  });

  it("never holds the prompt, the output or the body of a request", async () => {
    const prompt = "a-prompt-that-must-never-reach-the-logs";
    const res = await post("/api/v1/runs", { prompt, metadata: { note: "metadata-never-logged" }, config: { simulate: { steps: 1, step_ms: 1 } } });
    const { job_id } = await res.json<{ job_id: string }>();
    await drive(job_id);
    const output = await (await api(`/api/v1/runs/${job_id}/output`)).text();
    await api(`/api/v1/runs/${job_id}/result`);
    expect(lines.length).toBeGreaterThan(3);
    const logged = JSON.stringify(lines);
    for (const secret of [prompt, "metadata-never-logged", output.slice(0, 40)]) expect(logged).not.toContain(secret);
  });
});

describe("metrics", () => {
  /** A dataset that records each data point and passes it on to the real binding. */
  function recording() {
    const points: AnalyticsEngineDataPoint[] = [];
    const dataset: AnalyticsEngineDataset = {
      writeDataPoint(point) {
        points.push(point ?? {});
        env.METRICS.writeDataPoint(point);
      },
    };
    return { points, dataset };
  }

  it("one data point per transition: tenant, status, runner, model; run time and tokens; indexed by tenant", async () => {
    const id = await submit({ steps: 2, step_ms: 1 });
    const { points, dataset } = recording();
    await withBindings(id, { METRICS: dataset });
    const job = await drive(id);
    expect(points).toHaveLength(1);
    const [point] = points;
    expect(point.blobs).toEqual(["default", "succeeded", "simulated", "simulated", "running"]);
    expect(point.indexes).toEqual(["default"]);
    expect(point.doubles).toHaveLength(2);
    expect(point.doubles![0]).toBeGreaterThanOrEqual(0);
    expect(point.doubles![1]).toBe(job.usage.total_tokens);
    expect(job.usage.total_tokens).toBeGreaterThan(0);
  });

  it("without the binding nothing is sent and the job runs to its end", async () => {
    const id = await submit({ steps: 2 });
    await withBindings(id, { METRICS: undefined });
    expect((await drive(id)).status).toBe("succeeded");
    expect(ofEvent("failure")).toEqual([]);
  });
});

describe("the front page and /health", () => {
  it("GET / is the reference frontend: its page, script and styles, locked to its own origin", async () => {
    const page = await api("/");
    expect(page.status).toBe(200);
    expect(page.headers.get("Content-Type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("Content-Security-Policy")).toMatch(/default-src 'self'/);
    expect(page.headers.get("Referrer-Policy")).toBe("no-referrer");
    const html = await page.text();
    expect(html).toContain('<script type="module" src="/app.js"></script>');
    expect(html).toContain('href="/docs"');
    const styles = await api("/app.css");
    expect(styles.status).toBe(200);
    expect(styles.headers.get("Content-Type")).toBe("text/css; charset=utf-8");
    expect((await styles.text()).length).toBeGreaterThan(1000);
    // The script is modules the browser loads as they are: every one that app.js imports, and so on, is served.
    const modules = new Set(["/app.js"]);
    for (const path of modules) {
      const res = await api(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("Content-Type")).toBe("text/javascript; charset=utf-8");
      expect(res.headers.get("Content-Security-Policy")).toMatch(/default-src 'self'/);
      for (const [, imported] of (await res.text()).matchAll(/^import [^;]+ from "\.(\/\w+\.js)";$/gm)) modules.add(imported);
    }
    expect([...modules].sort()).toEqual(["/app.js", "/events.js", "/grant.js", "/known.js", "/output.js", "/page.js", "/requests.js", "/run.js", "/runs.js", "/start.js"]);
  });

  it("GET /docs is Swagger UI on /openapi.json, its files served from the Worker's own bundle", async () => {
    const page = await api("/docs");
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('url: "/openapi.json"');
    for (const [path, type, bytes] of [
      ["/docs/swagger-ui-bundle.js", "text/javascript; charset=utf-8", 1_000_000],
      ["/docs/swagger-ui.css", "text/css; charset=utf-8", 100_000],
      ["/docs/favicon-32x32.png", "image/png", 500],
    ] as const) {
      expect(html).toContain(path);
      const res = await api(path);
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Type")).toBe(type);
      const body = new Uint8Array(await res.arrayBuffer());
      expect(body.length).toBeGreaterThan(bytes);
      if (type === "image/png") expect([...body.slice(1, 4)]).toEqual([0x50, 0x4e, 0x47]);
    }
    for (const missing of ["/docs/index.html", "/docs/swagger-ui-bundle.js.map", "/docs/constructor", "/docs/__proto__"]) {
      const res = await api(missing);
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ detail: "Not Found" });
    }
  });
});

describe("a deployment whose settings are unsound answers 503 naming the setting", () => {
  async function fetchWith(settings: Partial<Record<string, string>>, path: string, init?: RequestInit) {
    const ctx = createExecutionContext();
    const res = await worker.fetch!(new Request(`${BASE}${path}`, init) as Request<unknown, IncomingRequestCfProperties>, overlay(env, settings as Partial<Env>), ctx);
    await waitOnExecutionContext(ctx);
    return res;
  }

  const cases: [string, Record<string, string>, RegExp][] = [
    ["API_KEYS that is not JSON", { API_KEYS: "{alpha" }, /API_KEYS must be a JSON object/],
    ["API_KEYS mapping something else than hashes", { API_KEYS: JSON.stringify({ "key-alpha": "alpha" }) }, /API_KEYS must be a JSON object/],
    ["TOKEN_SECRET too short", { TOKEN_SECRET: "short-secret" }, /TOKEN_SECRET must be at least 32 characters; it has 12/],
    ["WEBHOOK_SECRET not base64", { WEBHOOK_SECRET: "whsec_not base64!" }, /WEBHOOK_SECRET must be whsec_ followed by base64/],
    ["WEBHOOK_SECRET too short", { WEBHOOK_SECRET: `whsec_${btoa("tiny")}` }, /WEBHOOK_SECRET must hold at least 24 bytes/],
    ["the TOKEN_SECRET being rotated out too short", { TOKEN_SECRET: "t".repeat(40), TOKEN_SECRET_PREVIOUS: "short" }, /TOKEN_SECRET_PREVIOUS must be at least 32 characters; it has 5/],
    ["a WEBHOOK_SECRET_PREVIOUS with no WEBHOOK_SECRET", { WEBHOOK_SECRET: "", WEBHOOK_SECRET_PREVIOUS: `whsec_${btoa("a-webhook-signing-key-of-32-bytes")}` }, /WEBHOOK_SECRET_PREVIOUS is set without WEBHOOK_SECRET/],
    ["a limit that is no number", { MAX_RUNNING_PER_TENANT: "ten" }, /MAX_RUNNING_PER_TENANT must be a whole number within its range; it is "ten"/],
    ["a limit below its least value", { MAX_STEP_ATTEMPTS: "0" }, /MAX_STEP_ATTEMPTS must be a whole number/],
    ["more projection shards than sequence numbers can tell apart", { PROJECTION_SHARDS: "17" }, /PROJECTION_SHARDS must be a whole number within its range; it is "17"/],
    ["no line at all", { LINE_SHARDS: "0" }, /LINE_SHARDS must be a whole number within its range; it is "0"/],
    ["a body limit past what a job can store", { MAX_BODY_BYTES: "2097153" }, /MAX_BODY_BYTES must be a whole number within its range; it is "2097153"/],
    ["an inline result past what an isolate should hold", { INLINE_RESULT_BYTES: "8388609" }, /INLINE_RESULT_BYTES must be a whole number within its range; it is "8388609"/],
    ["a count before the raise no less than the count now", { PROJECTION_SHARDS_BEFORE: "1" }, /PROJECTION_SHARDS_BEFORE must be less than PROJECTION_SHARDS \(1\); it is 1/],
    ["MODEL_BASE_URL that is no URL", { MODEL_BASE_URL: "llm.internal" }, /MODEL_BASE_URL must be an http\(s\) URL/],
    ["MODEL_BASE_URL with a space in its host", { MODEL_BASE_URL: "https://llm internal/v1" }, /MODEL_BASE_URL must be an http\(s\) URL; it is "https:\/\/llm internal\/v1"/],
    ["WEBHOOK_ALLOW_PRIVATE that is neither true nor false", { WEBHOOK_ALLOW_PRIVATE: "yes" }, /WEBHOOK_ALLOW_PRIVATE must be true or false; it is "yes"/],
    ["ALLOW_SIMULATE written as Python writes true", { ALLOW_SIMULATE: "True" }, /ALLOW_SIMULATE must be true or false; it is "True"/],
    ["a CORS origin with a trailing slash, which no browser's Origin has", { CORS_ORIGINS: "https://app.example.com, https://admin.example.com/" }, /CORS_ORIGINS must list origins as browsers send them \(scheme:\/\/host\[:port\], no path\) or \*; "https:\/\/admin.example.com\/" is not one/],
    ["a CORS origin without its scheme", { CORS_ORIGINS: "app.example.com" }, /CORS_ORIGINS must list origins .*; "app.example.com" is not one/],
    ["a CORS origin with its default port, which browsers leave out", { CORS_ORIGINS: "https://app.example.com:443" }, /"https:\/\/app.example.com:443" is not one/],
    ["MODEL_API_KEY_HEADER that is no header name", { MODEL_API_KEY_HEADER: "api-key:" }, /MODEL_API_KEY_HEADER must be a header name, such as api-key; it is "api-key:"/],
    ["MODEL_BASE_URL of a scheme other than http(s)", { MODEL_BASE_URL: "ftp://llm.internal/v1" }, /MODEL_BASE_URL must be an http\(s\) URL; it is "ftp:\/\/llm.internal\/v1"/],
    ["API_KEYS as a JSON list, even an empty one", { API_KEYS: "[]" }, /API_KEYS must be a JSON object/],
    ["API_KEYS naming a tenant by a number", { API_KEYS: JSON.stringify({ ["a".repeat(64)]: 7 }) }, /API_KEYS must be a JSON object/],
    ["API_KEYS naming a tenant of over 64 characters", { API_KEYS: JSON.stringify({ ["a".repeat(64)]: "t".repeat(65) }) }, /API_KEYS must be a JSON object/],
    ["a TOKEN_SECRET short once the newline it was pasted with is left out", { TOKEN_SECRET: `${"t".repeat(31)}\n` }, /TOKEN_SECRET must be at least 32 characters; it has 31/],
  ];

  it.each(cases)("%s", async (_what, settings, detail) => {
    for (const [path, init] of [["/api/v1/runs", undefined], ["/stats", undefined], ["/api/v1/runs", { method: "POST", headers: { "content-type": "application/json" }, body: '{"prompt":"x"}' }]] as const) {
      const res = await fetchWith(settings, path, init);
      expect(res.status).toBe(503);
      const body = await res.json<{ detail: string }>();
      expect(body.detail).toMatch(/^Service misconfigured: /);
      expect(body.detail).toMatch(detail);
    }
    // Liveness is still answered, so that the deployment can be told apart from a dead one.
    expect((await fetchWith(settings, "/health")).status).toBe(200);
  });

  it("settings at either end of their ranges are taken, and secrets of the least length", async () => {
    const edges = {
      MAX_STEP_ATTEMPTS: "1",
      RETENTION_SECONDS: "0",
      MAX_BODY_BYTES: String(2 * 1024 * 1024),
      INLINE_RESULT_BYTES: String(8 * 1024 * 1024),
      PROJECTION_SHARDS: "16",
      PROJECTION_SHARDS_BEFORE: "15",
      LINE_SHARDS: "16",
      TOKEN_SECRET: "t".repeat(32),
      WEBHOOK_SECRET: `whsec_${btoa("k".repeat(24))}`,
    };
    for (const path of ["/api/v1/runs", "/stats"]) expect((await fetchWith(edges, path)).status).toBe(200);
  });

  it("a setting with whitespace around it, as a secret pasted with its newline has, is read as its text", async () => {
    const pasted = { ALLOW_SIMULATE: "true\n", MAX_RUNNING_PER_TENANT: " 5 ", MODEL_API_KEY_HEADER: "api-key\n", TOKEN_SECRET: ` ${"t".repeat(32)}\n` };
    expect((await fetchWith(pasted, "/stats")).status).toBe(200);
  });

  it("CORS_ORIGINS may list an origin of a scheme other than http(s), such as a browser extension's, or be *", async () => {
    const extension = "chrome-extension://abcdefghijklmnopabcdefghijklmnop";
    for (const origins of [`https://app.example.com, ${extension}`, "*"]) {
      const res = await fetchWith({ CORS_ORIGINS: origins }, "/stats", { headers: { Origin: extension } });
      expect(res.status, origins).toBe(200);
      expect(res.headers.get("access-control-allow-origin")).toBe(extension);
    }
  });

  it("a deployment with keys and no WEBHOOK_SECRET refuses a webhook_url (and nothing is stored), but not other submits", async () => {
    const key = "operations-test-key";
    const hash = hex(await sha256(key));
    const settings = { API_KEYS: JSON.stringify({ [hash]: "operations" }), WEBHOOK_SECRET: "" };
    const headers = { "content-type": "application/json", authorization: `Bearer ${key}` };
    const hooked = await fetchWith(settings, "/api/v1/runs", { method: "POST", headers, body: JSON.stringify({ prompt: "x", webhook_url: "https://hooks.example.com/in" }) });
    expect(hooked.status).toBe(503);
    expect((await hooked.json<{ detail: string }>()).detail).toMatch(/WEBHOOK_SECRET is not set/);
    const stats = await (await fetchWith(settings, "/stats", { headers })).json<{ total_jobs: number }>();
    expect(stats.total_jobs).toBe(0);
    const plain = await fetchWith(settings, "/api/v1/runs", { method: "POST", headers, body: JSON.stringify({ prompt: "x", delay_seconds: 3600 }) });
    expect(plain.status).toBe(202);
  });

  it("a retry of a job with a webhook_url is refused the same way once the secret is gone, and makes nothing", async () => {
    const key = "operations-retry-key";
    const hash = hex(await sha256(key));
    const signed = { API_KEYS: JSON.stringify({ [hash]: "operations-retry" }), WEBHOOK_SECRET: `whsec_${btoa("a-signing-secret-of-at-least-32-bytes")}` };
    const unsigned = { ...signed, WEBHOOK_SECRET: "" };
    const headers = { "content-type": "application/json", authorization: `Bearer ${key}` };
    const made = await fetchWith(signed, "/api/v1/runs", { method: "POST", headers, body: JSON.stringify({ prompt: "x", delay_seconds: 3600, webhook_url: "https://hooks.example.com/in" }) });
    expect(made.status).toBe(202);
    const { job_id } = await made.json<{ job_id: string }>();
    expect((await fetchWith(signed, `/api/v1/runs/${job_id}/cancel`, { method: "POST", headers: { authorization: headers.authorization } })).status).toBe(200);

    const bare = { authorization: headers.authorization };
    const refused = await fetchWith(unsigned, `/api/v1/runs/${job_id}/retry`, { method: "POST", headers: bare });
    expect(refused.status).toBe(503);
    expect((await refused.json<{ detail: string }>()).detail).toMatch(/WEBHOOK_SECRET is not set/);
    const stats = await (await fetchWith(signed, "/stats", { headers })).json<{ total_jobs: number }>();
    expect(stats.total_jobs).toBe(1);
    // With the secret back, the same retry is made.
    expect((await fetchWith(signed, `/api/v1/runs/${job_id}/retry`, { method: "POST", headers: bare })).status).toBe(202);
  });
});

describe("the OpenAPI document", () => {
  it("describes every route the app serves, with its parameters and schemas", async () => {
    const { app } = await import("../src/app");
    const pages = new Set(["/", "/app.css", "/docs", "/docs/:file", "/openapi.json"]);
    // The frontend's script modules (/app.js and those it imports) are files, not API operations.
    const served = app.routes
      .filter((r) => r.method !== "ALL" && !pages.has(r.path) && !/^\/\w+\.js$/.test(r.path))
      .map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, "{$1}")}`);
    const doc = await (await api("/openapi.json")).json<{
      paths: Record<string, Record<string, { parameters: { name: string; in: string }[]; requestBody?: unknown }>>;
      components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
    }>();
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method} ${path}`));
    expect(documented.sort()).toEqual([...new Set(served)].sort());
    expect(doc.paths["/api/v1/runs/{id}"].delete.parameters.map((p) => `${p.in}:${p.name}`)).toEqual(["path:id", "query:force"]);
    expect(doc.paths["/api/v1/runs"].post.requestBody).toEqual({ required: true, content: { "application/json": { schema: { $ref: "#/components/schemas/SubmitRun" } } } });
    expect(Object.keys(doc.components.schemas.SubmitRun.properties!)).toContain("queue_ttl_seconds");
    expect(Object.keys(doc.components.schemas.Job.properties!)).toContain("queue_position");
  });
});
