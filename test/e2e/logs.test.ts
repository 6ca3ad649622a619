/**
 * The logs of a real `wrangler dev` with API keys: a JSON line for every request made here, with
 * the contract's fields; the submit's request id on each of its job's transitions; and not one
 * line holding a key, a secret, a prompt or an output.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, stopServer, type DevServer } from "./server";

const KEY = "rk_logs-test-key-which-must-never-be-logged";
const OTHER_KEY = "rk_a-wrong-key-which-must-never-be-logged-either";
const WEBHOOK_SECRET = `whsec_${Buffer.from("logs-test-webhook-signing-key-32b").toString("base64")}`;
const PROMPT = "a prompt whose words must never be logged";
const API_KEYS = JSON.stringify({ [createHash("sha256").update(KEY).digest("hex")]: "logs" });

let server: DevServer;
beforeAll(async () => {
  server = await startServer(undefined, ["--log-level", "log", "--var", `API_KEYS:${API_KEYS}`, "--var", `WEBHOOK_SECRET:${WEBHOOK_SECRET}`]);
});
afterAll(async () => {
  if (server) await stopServer(server);
});

let counter = 0;
const sent: { id: string; method: string; route: string; status?: number }[] = [];

/** A request with a request id of our own, remembered with the route template it should be logged under. */
async function call(method: string, path: string, route: string, init: { body?: unknown; key?: string | null } = {}) {
  const id = `logs-test-${String(++counter).padStart(4, "0")}`;
  const headers: Record<string, string> = { "X-Request-Id": id };
  if (init.key !== null) headers.authorization = `Bearer ${init.key ?? KEY}`;
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${server.base}${path}`, { method, headers, body: init.body === undefined ? undefined : JSON.stringify(init.body) });
  expect(res.headers.get("X-Request-Id")).toBe(id);
  sent.push({ id, method, route, status: res.status });
  return res;
}

/** Every line of the server's output that is one of our JSON log lines, each parsed. */
function logLines(): Record<string, unknown>[] {
  return server.output
    .join("")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith('{"event":'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("logs under wrangler dev", () => {
  it("a line per request, the job followed by one request id, nothing secret", async () => {
    const submitted = await call("POST", "/api/v1/runs", "/api/v1/runs", { body: { prompt: PROMPT, config: { simulate: { steps: 2, step_ms: 50 } } } });
    expect(submitted.status).toBe(202);
    const { job_id } = (await submitted.json()) as { job_id: string };
    const submitId = sent[0].id;
    let status = "queued";
    for (let i = 0; i < 200 && status !== "succeeded"; i++) {
      status = ((await (await call("GET", `/api/v1/runs/${job_id}`, "/api/v1/runs/:id")).json()) as { status: string }).status;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(status).toBe("succeeded");
    const output = await (await call("GET", `/api/v1/runs/${job_id}/output`, "/api/v1/runs/:id/output")).text();
    expect(output.length).toBeGreaterThan(20);
    await (await call("GET", `/api/v1/runs/${job_id}/result`, "/api/v1/runs/:id/result")).text();
    await (await call("GET", `/api/v1/runs/${job_id}/stream`, "/api/v1/runs/:id/stream")).text();
    await call("GET", "/api/v1/runs?page_size=5", "/api/v1/runs");
    await call("GET", "/stats", "/stats");
    await call("GET", "/api/v1/runs/run_nosuchjob", "/api/v1/runs/:id");
    await call("GET", "/api/v1/runs", "/api/v1/runs", { key: OTHER_KEY });
    await call("GET", "/api/v1/runs", "/api/v1/runs", { key: null });
    await call("GET", "/health", "/health", { key: null });
    await call("GET", "/no/such/route", "unmatched");
    await call("DELETE", `/api/v1/runs/${job_id}`, "/api/v1/runs/:id");

    // Lines reach wrangler's output a moment after the answers.
    let lines = logLines();
    for (let i = 0; i < 50 && !sent.every((s) => lines.some((l) => l.request_id === s.id && l.event === "request")); i++) {
      await new Promise((r) => setTimeout(r, 100));
      lines = logLines();
    }
    for (const request of sent) {
      const found = lines.filter((l) => l.event === "request" && l.request_id === request.id);
      expect(found, request.id).toHaveLength(1);
      expect(Object.keys(found[0]).sort()).toEqual(["duration_ms", "event", "job_id", "method", "request_id", "route", "status", "tenant"]);
      expect(found[0]).toMatchObject({ method: request.method, route: request.route, status: request.status });
    }
    const byId = (id: string) => lines.find((l) => l.request_id === id && l.event === "request")!;
    expect(byId(submitId)).toMatchObject({ tenant: "logs", job_id, status: 202 });
    expect(byId(sent.find((s) => s.status === 401)!.id)).toMatchObject({ tenant: null, status: 401 });

    const transitions = lines.filter((l) => l.event === "transition" && l.job_id === job_id);
    expect(transitions.map((l) => `${l.from}→${l.to}`)).toEqual(["queued→running", "running→succeeded"]);
    for (const line of transitions) expect(line).toMatchObject({ request_id: submitId, tenant: "logs" });

    const everything = server.output.join("");
    for (const secret of [KEY, OTHER_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.slice(6), PROMPT, output.slice(0, 32), output.slice(-32)]) {
      expect(everything).not.toContain(secret);
    }
  });
});
