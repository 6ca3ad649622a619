/**
 * A corpus of hostile requests, generated and hand-picked, sent to every endpoint: each must be
 * refused with a 4xx carrying a `detail`, never a 5xx, and leave storage as it was.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, finished, JOB_ENDPOINTS } from "./helpers";

interface Case {
  name: string;
  path: string;
  init?: RequestInit;
}

const json = (body: string, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body,
});
const submitCase = (name: string, body: unknown, headers: Record<string, string> = {}): Case => ({
  name,
  path: "/api/v1/runs",
  init: json(typeof body === "string" ? body : JSON.stringify(body), headers),
});
/** A JSON body posted to `path`, named by `what` and the body's start. */
const bodyCase = (what: string, path: string, body: unknown): Case => ({ name: `${what} ${JSON.stringify(body).slice(0, 30)}`, path, init: json(JSON.stringify(body)) });

const MALFORMED = [
  "", " ", "{", "}", "[", '{"prompt":}', '{"prompt":"x",}', "{'prompt':'x'}", '{"prompt":"x"}{"prompt":"y"}',
  '{"prompt":"x"} trailing', "NaN", "Infinity", '{"prompt": NaN}', '{"prompt": undefined}', "\u0000", '{"prompt":"x"\u0000}',
  '{"prompt":"unterminated}', "{prompt: 'x'}", '{"a":1,,"b":2}', "01", '{"prompt":"\\x41"}', '{"prompt":"\\u12"}', "/* c */ {}",
];

function nested(depth: number, open: string, close: string, inner = "1"): string {
  return open.repeat(depth) + inner + close.repeat(depth);
}

// An empty framework, agent_file, agent_yaml, recipe_name, webhook_url or idempotency_key is not
// hostile: it is read as not given, as PraisonAI's server reads it (test/submit.test.ts).
const FIELDS: Record<string, unknown[]> = {
  prompt: [123, true, null, [], {}, "", "   ", "\n\t"],
  agent_file: [123, true, [], {}, "../x.yaml", "/abs.yaml", "a/../../b.yaml", "..", "x.txt", "missing.yaml", "%2e%2e/x.yaml", "agents.yaml\u0000.txt"],
  agent_yaml: [123, true, [], {}, "roles: [", "just text", "roles: {}", "- a\n- b"],
  framework: [123, "crewai", "autogen", "PraisonAI"],
  config: ["x", 1, [], true, { simulate: "fast" }, { simulate: { steps: 0 } }, { simulate: { steps: 101 } }, { simulate: { steps: 1.5 } },
    { simulate: { step_ms: -1 } }, { simulate: { output_bytes: 2 ** 31 } }, { simulate: { fail_at_step: 0 } }, { temperature: 3 }, { max_tokens: 0 }, { model: 5 }],
  timeout: ["10", -1, 86401, 1.5, true, [], {}, 1e12],
  webhook_url: [123, "not a url", "ftp://example.com", "http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/x", "http://[::1]/x",
    "http://169.254.169.254/x", "https://u:p@example.com/x", "http://0x7f000001/x", "http://2130706433/x", "javascript:alert(1)"],
  session_id: [123, true, [], {}, "s".repeat(257)],
  idempotency_key: [123, true, [], {}, "k".repeat(257)],
  metadata: ["x", 1, [], { a: 1 }, { a: true }, { a: null }, { a: {} }, { "": "v" }, { ["k".repeat(65)]: "v" }, { a: "v".repeat(513) },
    Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, "v"]))],
  recipe_name: ["r", 1, {}, "../agents/agents", "summarize.yaml"],
  tags: ["x", 1, {}, [1], [""], ["has space"], ["a/b"], ["t".repeat(65)], Array.from({ length: 11 }, (_, i) => `t${i}`)],
  retention_seconds: [0, -1, 1.5, "60", true, 1e12],
  priority: [-1, 10, 4.5, "5", true, [], {}],
  concurrency_key: [1, true, [], {}, "k".repeat(129)],
  delay_seconds: [0, -1, 1.5, "60", 2_592_001, true, {}],
  start_after: [1, true, {}, "tomorrow", "2026-13-01T00:00:00Z", "2099-01-01T00:00:00Z"],
  queue_ttl_seconds: [0, -1, 1.5, "60", 2_592_001, []],
  input_timeout_s: [0, -1, 1.5, "60", 604_801, {}],
  recipe_config: ["x", 1, [], { model: 5 }, { temperature: -1 }, { max_tokens: 0 }, { unknown: 1 }],
};

/** Fields that may not come together (`delay_seconds` with `start_after`, a recipe with an agent), one that needs another (`recipe_config` needs `recipe_name`), and part two's knobs inside `config` out of range. */
const CLASHES: Record<string, unknown>[] = [
  { prompt: "x", delay_seconds: 60, start_after: new Date(Date.now() + 3_600_000).toISOString() },
  { prompt: "x", recipe_name: "summarize", agent_file: "agents.yaml" },
  { prompt: "x", recipe_config: { model: "m" } },
  { prompt: "x", config: { max_total_tokens: 0 } },
  { prompt: "x", config: { simulate: { input_at_step: 0 } } },
];

/** Answers to a request for input, retries and bulk operations that must be refused whatever the job. */
const INPUT_BODIES: unknown[] = [
  {}, { action: "maybe" }, { action: "revise" }, { action: "approve", input: 1 }, { action: "approve", input: "x".repeat(64 * 1024 + 1) },
  { action: ["approve"] }, null, [], "approve",
];
const RETRY_BODIES: unknown[] = [{ from_step: 0 }, { from_step: -1 }, { from_step: 1.5 }, { from_step: "1" }, { prompt: "" }, { prompt: 1 }, { config: "x" }, [], "x"];
const BULK_BODIES: unknown[] = [
  {}, { job_ids: [] }, { job_ids: "run_x" }, { job_ids: [1] }, { job_ids: Array.from({ length: 1001 }, (_, i) => `run_${i}`) },
  { status: "done" }, { status: ["queued"] }, { created_before: "yesterday" }, { created_before: 1 }, { tags: "x" }, { tags: ["has space"] },
  { session_id: 1 }, { status: "failed", force: "yes" }, null, [], "cancel",
];

/** Token requests that must be refused (local development mints with a development secret). */
const TOKEN_BODIES: unknown[] = [
  {}, { scopes: [] }, { scopes: "read" }, { scopes: ["admin"] }, { scopes: ["read"] }, { scopes: ["read", "submit"] },
  { scopes: ["read"], session_id: "" }, { scopes: ["read"], session_id: "s".repeat(257) }, { scopes: ["read"], runs: [] },
  { scopes: ["read"], runs: ["job_1"] }, { scopes: ["read"], runs: Array.from({ length: 101 }, (_, i) => `run_${i}`) },
  { scopes: ["read"], tags: [] }, { scopes: ["read"], tags: ["bad tag"] }, { scopes: ["read"], session_id: "s", ttl_seconds: 59 },
  { scopes: ["read"], session_id: "s", ttl_seconds: 86_401 }, { scopes: ["read"], session_id: "s", ttl_seconds: "900" },
  { scopes: ["submit"], max_submits: 0 }, { scopes: ["submit"], max_submits: 1001 }, { scopes: ["read"], session_id: "s", max_submits: 1 },
  { scopes: ["read"], session_id: "s", tenant: "other" }, null, [], "read",
];

const HOSTILE_IDS = ["run_a%2Fb", "%2F%2F", "run_..%2F..", "run_%E2%9C%93", "run_%FF%FE", "run_a%00b", `run_${"a".repeat(10 * 1024)}`, "job_abc", "RUN_abc", "run_"];

function corpus(knownId: string): Case[] {
  const cases: Case[] = [];
  for (const body of MALFORMED) cases.push(submitCase(`malformed ${JSON.stringify(body).slice(0, 30)}`, body));
  for (const depth of [33, 100, 1000, 10_000]) {
    cases.push(submitCase(`arrays nested ${depth} deep`, `{"prompt":"x","config":{"deep":${nested(depth, "[", "]")}}}`));
    cases.push(submitCase(`objects nested ${depth} deep`, `{"prompt":"x","config":${nested(depth, '{"a":', "}")}}`));
  }
  for (const [field, values] of Object.entries(FIELDS)) {
    for (const value of values) cases.push(submitCase(`${field} = ${JSON.stringify(value).slice(0, 30)}`, { prompt: "x", [field]: value }));
  }
  for (const body of [null, true, 1, "x", [], [{ prompt: "x" }], { prompt: "x", __proto__: { polluted: true }, framework: 1 }]) {
    cases.push(submitCase(`body ${JSON.stringify(body)}`, JSON.stringify(body)));
  }
  for (const body of CLASHES) cases.push(submitCase(`clash ${Object.keys(body).slice(1).join(" + ")} ${JSON.stringify(body).slice(0, 30)}`, body));
  cases.push(submitCase("a body over 1 MiB", { prompt: "x".repeat(1024 * 1024) }));
  cases.push(submitCase("invalid UTF-8", new TextDecoder("latin1").decode(new Uint8Array([0x7b, 0xff, 0x7d]))));
  for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json, text/plain", "application/jsonp", "json"]) {
    cases.push({ name: `content type ${type}`, path: "/api/v1/runs", init: { method: "POST", headers: { "content-type": type }, body: '{"prompt":"x"}' } });
  }
  for (const key of ["k".repeat(257), "a, b"]) {
    cases.push(submitCase(`Idempotency-Key ${key.slice(0, 10)}`, { prompt: "x" }, { "Idempotency-Key": key }));
  }

  // `status=` is not hostile: an empty value is not given, as PraisonAI's server reads it (test/read.test.ts).
  const queries = ["status=done", "status=QUEUED", "status=queued,running", "status=%E2%9C%93", "status=queued&status=done",
    "page=0", "page=-1", "page=abc", "page=1.5", "page=2000000", "page=1&page=0", "page_size=0", "page_size=101", "page_size=-5",
    "page_size=abc", "page_size=1e3", "cursor=%%%", "cursor=abc", "cursor=MA", "cursor=LTE", `cursor=${"A".repeat(65)}`, `session_id=${"s".repeat(257)}`];
  queries.push("tag=has%20space", "tag=", `tag=${"t".repeat(65)}`, Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join("&"),
    Array.from({ length: 6 }, (_, i) => `metadata.k${i}=v`).join("&"), "metadata.=v", `metadata.${"k".repeat(65)}=v`, `metadata.k=${"v".repeat(513)}`,
    "metadata.k=a&metadata.k=b", "token=ert_x.y");
  for (const q of queries) cases.push({ name: `list ?${q.slice(0, 30)}`, path: `/api/v1/runs?${q}` });
  for (const q of ["status=done", "tag=has%20space", Array.from({ length: 6 }, (_, i) => `metadata.k${i}=v`).join("&"), `session_id=${"s".repeat(257)}`, "token=ert_x.y"]) {
    cases.push({ name: `feed ?${q.slice(0, 30)}`, path: `/api/v1/runs/events?${q}` });
  }
  for (const lastId of ["abc", "-1", "1.5", "1e3"]) {
    cases.push({ name: `feed Last-Event-ID ${lastId}`, path: "/api/v1/runs/events", init: { headers: { "Last-Event-ID": lastId } } });
  }
  for (const body of TOKEN_BODIES) cases.push(bodyCase("token", "/api/v1/tokens", body));
  for (const body of MALFORMED.slice(0, 5)) cases.push({ name: `token malformed ${JSON.stringify(body)}`, path: "/api/v1/tokens", init: json(body) });
  for (const token of ["ert_", "ert_x.y", "ert_e30.AAAA", `ert_${"A".repeat(5000)}.x`]) {
    cases.push({ name: `bearer ${token.slice(0, 12)}`, path: "/api/v1/runs", init: { headers: { Authorization: `Bearer ${token}` } } });
  }

  for (const id of HOSTILE_IDS) {
    for (const [method, suffix] of JOB_ENDPOINTS) cases.push({ name: `${method} ${id.slice(0, 20)}${suffix}`, path: `/api/v1/runs/${id}${suffix}`, init: { method } });
  }
  for (const lastId of ["abc", "-1", "1.5", "99999999999999999999", "1e3", "0x10"]) {
    cases.push({ name: `stream Last-Event-ID ${lastId}`, path: `/api/v1/runs/${knownId}/stream`, init: { headers: { "Last-Event-ID": lastId } } });
    cases.push({ name: `stream ?after=${lastId}`, path: `/api/v1/runs/${knownId}/stream?after=${encodeURIComponent(lastId)}` });
  }
  // Not a boolean as FastAPI reads one (true, 1, yes, on and their false words are).
  for (const force of ["maybe", "2", "truee", ""]) {
    cases.push({ name: `delete ?force=${force}`, path: `/api/v1/runs/${knownId}?force=${force}`, init: { method: "DELETE" } });
  }
  cases.push({ name: "cancel a finished job", path: `/api/v1/runs/${knownId}/cancel`, init: { method: "POST" } });
  for (const body of INPUT_BODIES) cases.push(bodyCase("input", `/api/v1/runs/${knownId}/input`, body));
  for (const body of RETRY_BODIES) cases.push(bodyCase("retry", `/api/v1/runs/${knownId}/retry`, body));
  for (const action of ["cancel", "delete"]) {
    for (const body of BULK_BODIES) cases.push(bodyCase(`bulk ${action}`, `/api/v1/runs/bulk/${action}`, body));
  }
  cases.push({ name: "bulk, an unknown operation", path: "/api/v1/runs/bulk/nope", init: { method: "POST" } });
  cases.push({ name: "bulk, an unknown id", path: "/api/v1/runs/bulk/bulk_nothere" });
  cases.push({ name: "output range past the end", path: `/api/v1/runs/${knownId}/output`, init: { headers: { Range: "bytes=999999-" } } });
  return cases;
}

async function snapshot() {
  const index = env.PROJECTIONS.getByName("default");
  const list = await index.list({ page: 1, page_size: 100 });
  const objects = await env.OUTPUTS.list({ prefix: "runs/" });
  return { stats: await index.stats(), ids: list.jobs.map((j) => j.job_id), objects: objects.objects.map((o) => `${o.key}:${o.etag}`) };
}

describe("hostile input", () => {
  it("every case is refused with a 4xx and a detail; nothing is stored", { timeout: 30_000 }, async () => {
    const knownId = await finished({ steps: 1 });
    const before = await snapshot();
    const cases = corpus(knownId);
    expect(cases.length).toBeGreaterThanOrEqual(400);

    const wrong: string[] = [];
    for (const c of cases) {
      const res = await api(c.path, c.init);
      const text = await res.text();
      let detail: unknown;
      try {
        detail = (JSON.parse(text) as { detail?: unknown }).detail;
      } catch {
        detail = undefined;
      }
      const hasDetail = (typeof detail === "string" && detail.length > 0) || (Array.isArray(detail) && detail.length > 0);
      if (res.status < 400 || res.status >= 500 || !hasDetail) wrong.push(`${c.name}: ${res.status} ${text.slice(0, 120)}`);
    }
    expect(wrong).toEqual([]);
    expect(await snapshot()).toEqual(before);
  });

  it("a query parameter named as a property every object inherits (constructor, __proto__), given twice, is as unknown as any other", { timeout: 30_000 }, async () => {
    const knownId = await finished({ steps: 1 });
    const paths = ["/api/v1/runs", "/api/v1/runs/events", `/api/v1/runs/${knownId}`, `/api/v1/runs/${knownId}/result`, `/api/v1/runs/${knownId}/stream`, `/api/v1/runs/${knownId}/output`, "/stats"];
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
      for (const path of paths) {
        const plain = await api(path);
        const res = await api(`${path}?${name}=1&${name}=2`);
        // The feed never ends: its status is enough.
        if (path.endsWith("/events")) await Promise.all([plain.body?.cancel(), res.body?.cancel()]);
        expect(res.status, `${path}?${name}`).toBe(plain.status);
      }
      const unknown = await api(`/api/v1/runs/run_${name}x?${name}=1&${name}=2`, { method: "DELETE" });
      expect(unknown.status).toBe(404);
    }
  });
});
