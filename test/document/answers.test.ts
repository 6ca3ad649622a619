/**
 * The API document against the service's answers: a walk through every operation of
 * /openapi.json as clients meet it (a job in each status, refusals, a scoped token without the
 * scope, a deployment with a malformed setting), each answer's status declared for its operation
 * and its body what the document declares there: JSON valid against the declared schema, or the
 * declared media type. A client generated from the document reads every answer it is given.
 */
import { Validator, type Schema } from "@cfworker/json-schema";
import { beforeAll, describe, expect, it } from "vitest";
import { api, driveTo } from "../helpers";
import { ALPHA, bearer, fetchWith, JSON_TYPE, type Minted } from "../tokens/helpers";

type Declared = { description: string; content?: Record<string, { schema: Schema }> };
type Operation = { requestBody?: { content: Record<string, { schema: Schema }> }; responses: Record<string, Declared> };
type Document = { paths: Record<string, Record<string, Operation>>; components: { schemas: Record<string, Schema> } };

let document: Document;
/** What each answer broke of the document, and the answers met, as "METHOD /path/{template} status". */
const problems: string[] = [];
const met = new Set<string>();

beforeAll(async () => {
  document = await (await api("/openapi.json")).json<Document>();
});

/** The operation a request is: a literal path before a template (`/api/v1/runs/events` is not a job's id). */
function operationOf(method: string, pathname: string): string | null {
  if (document.paths[pathname]?.[method]) return pathname;
  const templated = Object.keys(document.paths).find(
    (path) => document.paths[path][method] && new RegExp(`^${path.replace(/\{[^}]+\}/g, "[^/]+")}$`).test(pathname),
  );
  return templated ?? null;
}

/** The operation a request's method and path (with its query, if any) name. */
const operationAt = (method: string, path: string) => operationOf(method.toLowerCase(), new URL(path, "http://localhost").pathname);

/** Checks one answer against the document, as the operation `path` names (null for none); gives back its JSON body, when it has one. */
async function checked(method: string, path: string, res: Response, operation = operationAt(method, path)): Promise<any> {
  const name = `${method} ${operation ?? new URL(path, "http://localhost").pathname} ${res.status}`;
  met.add(name);
  const type = res.headers.get("content-type") ?? "";
  if (type.startsWith("text/event-stream")) await res.body?.cancel();
  const text = type.startsWith("text/event-stream") ? "" : await res.text();
  if (operation === null) {
    problems.push(`${name}: no operation`);
    return null;
  }
  const declared = document.paths[operation][method.toLowerCase()].responses[String(res.status)];
  if (!declared) {
    problems.push(`${name}: status not declared (${text.slice(0, 120)})`);
    return null;
  }
  const media = Object.keys(declared.content ?? {});
  if (media.length === 0) {
    if (text !== "") problems.push(`${name}: a body where none is declared`);
    return null;
  }
  if (!media.some((m) => type.startsWith(m))) {
    problems.push(`${name}: ${type} where the document declares ${media}`);
    return null;
  }
  if (!type.startsWith("application/json")) return null;
  const body = JSON.parse(text);
  for (const error of againstDocument(declared.content!["application/json"].schema, body)) problems.push(`${name}: ${error}`);
  return body;
}

/** What `value` breaks of `schema`, a schema of the document, its `#/components/schemas/…` references resolved there. */
function againstDocument(schema: Schema, value: unknown): string[] {
  const whole = { ...structuredClone(schema), components: structuredClone(document.components) } as Schema;
  return new Validator(whole, "2020-12", false).validate(value).errors.map((error) => `${error.instanceLocation} ${error.error}`);
}

/** The document's schema for an operation's JSON body. */
const requestSchema = (method: string, path: string) => document.paths[path][method.toLowerCase()].requestBody!.content["application/json"].schema;

/**
 * A request through the Worker as tenant alpha (its key unless `headers` says otherwise), its
 * answer checked; and a body the service took, checked against the operation's request schema.
 */
async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = ALPHA): Promise<{ status: number; body: any; headers: Headers }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers = { ...JSON_TYPE, ...headers };
  }
  const res = await api(path, init);
  const operation = operationAt(method, path);
  const answer = await checked(method, path, res, operation);
  if (res.ok && typeof body === "object" && operation && document.paths[operation][method.toLowerCase()].requestBody) {
    for (const error of againstDocument(requestSchema(method, operation), body)) problems.push(`${method} ${operation}: a body taken that the document refuses: ${error}`);
  }
  return { status: res.status, body: answer, headers: res.headers };
}

const simulated = (simulate: Record<string, number>) => ({ prompt: "walk", config: { simulate: { step_ms: 1, ...simulate } } });

async function submitted(body: unknown, headers: Record<string, string> = ALPHA): Promise<string> {
  const { status, body: answer } = await call("POST", "/api/v1/runs", body, { ...ALPHA, ...headers });
  expect(status).toBe(202);
  return answer.job_id;
}

/** Tenant alpha's job driven to `status`. */
const driven = (id: string, status: "succeeded" | "failed" | "running" | "awaiting_input") => driveTo(id, status, 50, { tenant: "alpha", headers: ALPHA });

describe("every answer as /openapi.json declares it", () => {
  it("a walk through every operation: each answer's status declared, its body valid against the declared schema, each body taken valid against the request's", async () => {
    await call("GET", "/health", undefined, {});
    await call("GET", "/stats");
    await call("GET", "/api/v1/tokens/verify");

    // Jobs in every status, one with every field.
    const done = await submitted(simulated({ steps: 2, output_bytes: 300 }));
    const full = {
      ...simulated({ steps: 3 }),
      ...{ session_id: "walk", tags: ["w1", "w2"], metadata: { user: "u1" }, priority: 5, concurrency_key: "k1" },
      ...{ queue_ttl_seconds: 600, retention_seconds: 3600, timeout: 60 },
    };
    const keyed = await submitted(full, { "Idempotency-Key": "walk-1" });
    expect(await submitted(full, { "Idempotency-Key": "walk-1" })).toBe(keyed);
    expect((await call("POST", "/api/v1/runs", { prompt: "another" }, { ...ALPHA, "Idempotency-Key": "walk-1" })).status).toBe(409);
    // A key the service does not name is dropped, as FastAPI drops it; the document allows it too.
    const waiting = await submitted({ prompt: "later", delay_seconds: 3600, client_note: "not a field" });
    const running = await submitted(simulated({ steps: 3 }));
    const asking = await submitted(simulated({ steps: 2, input_at_step: 1 }));
    const failing = await submitted(simulated({ steps: 2, fail_at_step: 1 }));
    await driven(done, "succeeded");
    await driven(asking, "awaiting_input");
    await driven(failing, "failed");
    await driven(running, "running");
    const jobs = [done, keyed, waiting, running, asking, failing];

    // Refused submits.
    const both = { prompt: "x", delay_seconds: 5, start_after: new Date().toISOString() };
    for (const bad of [{}, { prompt: 5 }, { prompt: "x", priority: "high" }, both, "not json", simulated({ fail_at_step: 9 })]) await call("POST", "/api/v1/runs", bad);
    await call("POST", "/api/v1/runs", JSON.stringify({ prompt: "x".repeat(1_100_000) }));
    // A blank prompt breaks the schema: the service refuses it, and so does the document.
    for (const prompt of ["", " \n\t"]) {
      expect((await call("POST", "/api/v1/runs", { prompt })).status).toBe(422);
      expect(againstDocument(requestSchema("POST", "/api/v1/runs"), { prompt })).not.toEqual([]);
    }

    // Reads of each job, and of none.
    for (const id of [...jobs, "run_unknown"]) {
      await call("GET", `/api/v1/runs/${id}`);
      await call("GET", `/api/v1/runs/${id}/result`);
      await call("GET", `/api/v1/runs/${id}/output`);
      await call("GET", `/api/v1/runs/${id}/stream`);
    }
    await call("GET", `/api/v1/runs/${done}/stream?after=x`);
    const etag = (await call("GET", `/api/v1/runs/${done}/output`)).headers.get("etag")!;
    await call("GET", `/api/v1/runs/${done}/output`, undefined, { ...ALPHA, "If-None-Match": etag });
    await call("GET", `/api/v1/runs/${done}/output`, undefined, { ...ALPHA, "If-Match": '"other"' });
    await call("GET", `/api/v1/runs/${done}/output`, undefined, { ...ALPHA, Range: "bytes=0-9" });
    await call("GET", `/api/v1/runs/${done}/output`, undefined, { ...ALPHA, Range: "bytes=99999-" });

    // Lists and the feed.
    for (const query of ["", "?status=succeeded", "?status=bogus", "?session_id=walk", "?tag=w1&tag=w2", "?metadata.user=u1", "?page=2&page_size=1", "?page_size=0", "?cursor=garbage"]) {
      await call("GET", `/api/v1/runs${query}`);
    }
    const { body: page } = await call("GET", "/api/v1/runs?page_size=2");
    await call("GET", `/api/v1/runs?cursor=${page.next_cursor}`);
    await call("GET", "/api/v1/runs/events");
    await call("GET", "/api/v1/runs/events?status=bogus");

    // Acting on jobs.
    await call("POST", `/api/v1/runs/${asking}/input`, { action: "bogus" });
    await call("POST", `/api/v1/runs/${asking}/input`, { action: "approve", input: "fine" });
    await call("POST", `/api/v1/runs/${asking}/input`, { action: "approve" });
    await call("POST", "/api/v1/runs/run_unknown/input", { action: "approve" });
    await call("DELETE", `/api/v1/runs/${running}`);
    await call("POST", `/api/v1/runs/${running}/cancel`);
    await call("POST", `/api/v1/runs/${running}/cancel`);
    await call("POST", "/api/v1/runs/run_unknown/cancel");
    await call("POST", `/api/v1/runs/${failing}/retry`, { from_step: "failed" });
    await call("POST", `/api/v1/runs/${failing}/retry`, { bogus: 1 });
    await call("POST", `/api/v1/runs/${done}/retry`, {});
    await call("POST", "/api/v1/runs/run_unknown/retry", {});
    await call("DELETE", `/api/v1/runs/${waiting}?force=bogus`);
    await call("DELETE", `/api/v1/runs/${waiting}?force=true`);
    await call("DELETE", `/api/v1/runs/${waiting}`);

    // Bulk operations.
    const cancelling = await call("POST", "/api/v1/runs/bulk/cancel", { tags: ["w1"] });
    await call("POST", "/api/v1/runs/bulk/cancel", {});
    await call("POST", "/api/v1/runs/bulk/delete", { status: "bogus" });
    await call("POST", "/api/v1/runs/bulk/delete", { status: "cancelled", tags: ["w1"] });
    await call("GET", `/api/v1/runs/bulk/${cancelling.body.bulk_id}`);
    await call("GET", "/api/v1/runs/bulk/bulk_unknown");

    // Tokens, and what a token may not do.
    await call("POST", "/api/v1/tokens", { scopes: [] });
    const reader = (await call("POST", "/api/v1/tokens", { scopes: ["read"], session_id: "walk" })).body as Minted;
    const limited = (await call("POST", "/api/v1/tokens", { scopes: ["read", "stream"], runs: [done] })).body as Minted;
    const asReader = bearer(reader.token);
    await call("GET", "/api/v1/tokens/verify", undefined, asReader);
    await call("GET", `/api/v1/runs/${keyed}`, undefined, asReader);
    await call("POST", `/api/v1/runs/${keyed}/cancel`, undefined, asReader);
    await call("POST", `/api/v1/runs/${keyed}/input`, { action: "approve" }, asReader);
    await call("DELETE", `/api/v1/runs/${keyed}`, undefined, asReader);
    await call("GET", `/api/v1/runs/${keyed}/stream`, undefined, asReader);
    await call("POST", "/api/v1/runs", { prompt: "x" }, asReader);
    await call("POST", `/api/v1/runs/${keyed}/retry`, {}, asReader);
    await call("GET", "/stats", undefined, asReader);
    await call("POST", "/api/v1/runs/bulk/cancel", { tags: ["w1"] }, asReader);
    await call("GET", `/api/v1/runs/bulk/${cancelling.body.bulk_id}`, undefined, asReader);
    await call("POST", "/api/v1/tokens", { scopes: ["read"] }, asReader);
    await call("GET", "/api/v1/runs/events", undefined, asReader);
    await call("GET", "/api/v1/runs", undefined, bearer(limited.token));
    await call("GET", "/api/v1/runs", undefined, {});
    await call("GET", `/api/v1/runs/${done}`, undefined, bearer("ert_forged.token"));

    // A deployment whose setting is malformed.
    const misconfigured = await fetchWith({ CORS_ORIGINS: "https://app.example.com/" }, "/api/v1/runs", { headers: ALPHA });
    await checked("GET", "/api/v1/runs", misconfigured);

    expect(problems).toEqual([]);
    // The walk met every operation, and the answers this file was written for.
    for (const [path, operations] of Object.entries(document.paths)) {
      for (const method of Object.keys(operations)) {
        expect([...met].some((answer) => answer.startsWith(`${method.toUpperCase()} ${path} 2`)), `${method} ${path}`).toBe(true);
      }
    }
    expect([...met]).toEqual(
      expect.arrayContaining([
        "POST /api/v1/runs 409",
        "GET /api/v1/runs/{id}/result 400",
        "POST /api/v1/runs/{id}/cancel 403",
        "GET /stats 403",
        "POST /api/v1/runs/bulk/cancel 403",
        "GET /api/v1/runs 401",
        "GET /api/v1/runs 503",
      ]),
    );
  });
});
