/**
 * One version of skew between the Worker and its objects, as a deploy leaves it for a while: some
 * Worker instances and some objects run the new version, others still the previous one.
 *
 * - Today's Worker against the previous version's objects: the auxiliary Worker "previous" runs
 *   that version's bundle (test/skew/previous.worker.js) with objects of its own, reached through
 *   the PREVIOUS_* bindings. Its alarms fire by themselves.
 * - The previous version's Worker against today's objects: its HTTP handler, imported here, is
 *   given today's bindings. Today's alarms are fired by hand, as in the other projects.
 */
import { createExecutionContext, env, runDurableObjectAlarm, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import type { Job } from "../../src/schemas";
import { overlay } from "../faults";
import { BASE, lineStub, parseSse, runStub } from "../helpers";
import previous from "./previous.worker.js";

type Handler = ExportedHandler<Env>;
const JSON_TYPE = { "content-type": "application/json" };
const TERMINAL = ["succeeded", "failed", "cancelled"];

/** Today's bindings with the objects of the previous version in place of today's. */
const previousObjects = (): Env => {
  const bindings = env as unknown as Record<string, DurableObjectNamespace>;
  return overlay(env, {
    RUNS: bindings.PREVIOUS_RUNS,
    PROJECTIONS: bindings.PREVIOUS_PROJECTIONS,
    LINES: bindings.PREVIOUS_LINES,
    BULKS: bindings.PREVIOUS_BULKS,
  } as unknown as Partial<Env>);
};

function client(handler: Handler, bindings: () => Env) {
  return async (path: string, init: RequestInit = {}): Promise<Response> => {
    const ctx = createExecutionContext();
    const res = await handler.fetch!(new Request(`${BASE}${path}`, init) as Request<unknown, IncomingRequestCfProperties>, bindings(), ctx);
    await waitOnExecutionContext(ctx);
    return res;
  };
}

const submitBody = (extra: Record<string, unknown> = {}) => JSON.stringify({ prompt: "skew", config: { simulate: { steps: 2, step_ms: 1 } }, ...extra });

describe("today's Worker, the previous version's objects", () => {
  const api = client(worker, previousObjects);

  async function finished(id: string): Promise<Job> {
    for (let i = 0; i < 200; i++) {
      const job = await (await api(`/api/v1/runs/${id}`)).json<Job>();
      if (TERMINAL.includes(job.status)) return job;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`${id} did not finish`);
  }

  it("submits, reads, lists, streams, cancels and deletes as ever", async () => {
    const session = `skew-${crypto.randomUUID()}`;
    const submitted = await api("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ session_id: session }) });
    expect(submitted.status).toBe(202);
    const { job_id } = await submitted.json<{ job_id: string }>();
    expect((await finished(job_id)).status).toBe("succeeded");
    const result = await api(`/api/v1/runs/${job_id}/result`);
    expect(result.status).toBe(200);
    expect((await result.json<{ result: string }>()).result).toContain("simulated answer to: skew");
    const stream = parseSse(await (await api(`/api/v1/runs/${job_id}/stream`)).text());
    expect(stream.at(-1)?.data).toBe("[DONE]");
    const listed = await (await api(`/api/v1/runs?session_id=${session}`)).json<{ total: number; jobs: Job[] }>();
    expect(listed.jobs.map((j) => j.job_id)).toEqual([job_id]);
    expect((await api("/stats")).status).toBe(200);

    const long = await (await api("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ config: { simulate: { steps: 50, step_ms: 200 } } }) })).json<{ job_id: string }>();
    const cancelled = await api(`/api/v1/runs/${long.job_id}/cancel`, { method: "POST" });
    expect(cancelled.status).toBe(200);
    expect((await cancelled.json<Job>()).status).toBe("cancelled");

    for (const id of [job_id, long.job_id]) {
      expect((await api(`/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
      expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    }
  });

  it("what the previous objects cannot do is answered 503 with Retry-After, never 500 and never half done", async () => {
    const tag = `skew-${crypto.randomUUID().slice(0, 8)}`;
    const { job_id } = await (await api("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ tags: [tag] }) })).json<{ job_id: string }>();
    await finished(job_id);
    // A list by tag: the previous projection would answer it unfiltered, so it is not asked to.
    for (const path of [`/api/v1/runs?tag=${tag}`, "/api/v1/runs?metadata.owner=ann", "/api/v1/runs/events"]) {
      const res = await api(path);
      expect(res.status, path).toBe(503);
      expect(res.headers.get("Retry-After")).toBe("1");
      expect(await res.json()).toEqual({ detail: "Service is being updated; retry shortly" });
    }
    // A bulk delete by metadata: the previous projection would match with the metadata left out, every finished job.
    const erase = await api("/api/v1/runs/bulk/delete", { method: "POST", headers: JSON_TYPE, body: JSON.stringify({ metadata: { owner: "ann" } }) });
    expect(erase.status).toBe(503);
    expect(await erase.json()).toEqual({ detail: "Service is being updated; retry shortly" });
    expect((await api(`/api/v1/runs/${job_id}`)).status).toBe(200);
    // A token's submit: its count lives in a projection that has no counter yet; nothing is stored.
    const minted = await api("/api/v1/tokens", { method: "POST", headers: JSON_TYPE, body: JSON.stringify({ scopes: ["submit", "read"], session_id: "skew-token" }) });
    const { token } = await minted.json<{ token: string }>();
    const refused = await api("/api/v1/runs", { method: "POST", headers: { ...JSON_TYPE, Authorization: `Bearer ${token}` }, body: submitBody() });
    expect(refused.status).toBe(503);
    expect((await (await api("/api/v1/runs?session_id=skew-token")).json<{ total: number }>()).total).toBe(0);
    // What a token does with methods the previous objects have works: reading a job in reach.
    const reader = await (await api("/api/v1/tokens", { method: "POST", headers: JSON_TYPE, body: JSON.stringify({ scopes: ["read"], runs: [job_id] }) })).json<{ token: string }>();
    expect((await api(`/api/v1/runs/${job_id}`, { headers: { Authorization: `Bearer ${reader.token}` } })).status).toBe(200);
  });
});

describe("the previous version's Worker, today's objects", () => {
  const old = client(previous, () => env);
  const today = client(worker, () => env);

  async function drive(id: string): Promise<Job> {
    for (let i = 0; i < 100; i++) {
      const job = await (await today(`/api/v1/runs/${id}`)).json<Job>();
      if (TERMINAL.includes(job.status) || job.status === "awaiting_input") return job;
      if (job.status === "queued") await runDurableObjectAlarm(lineStub());
      await runDurableObjectAlarm(runStub(id));
    }
    throw new Error(`${id} did not finish`);
  }

  it("submits, reads, lists, streams, cancels and deletes as ever", async () => {
    const session = `skew-${crypto.randomUUID()}`;
    const submitted = await old("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ session_id: session, tags: ["old"] }) });
    expect(submitted.status).toBe(202);
    const { job_id } = await submitted.json<{ job_id: string }>();
    expect((await drive(job_id)).status).toBe("succeeded");
    // Each Worker reads the same job.
    const [byOld, byToday] = await Promise.all([old(`/api/v1/runs/${job_id}`), today(`/api/v1/runs/${job_id}`)]);
    expect((await byOld.json<Job>()).status).toBe("succeeded");
    expect((await byToday.json<Job>()).tags).toEqual(["old"]);
    expect((await (await old(`/api/v1/runs/${job_id}/result`)).json<{ result: string }>()).result).toContain("simulated answer to: skew");
    expect(parseSse(await (await old(`/api/v1/runs/${job_id}/stream`)).text()).at(-1)?.data).toBe("[DONE]");
    const listed = await (await old(`/api/v1/runs?session_id=${session}`)).json<{ jobs: Job[]; total: number }>();
    expect(listed.jobs.map((j) => j.job_id)).toEqual([job_id]);
    // Today's Worker finds it by the tag the previous one submitted.
    expect((await (await today(`/api/v1/runs?tag=old&session_id=${session}`)).json<{ total: number }>()).total).toBe(1);
    expect((await old("/stats")).status).toBe(200);

    const queued = await (await old("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ delay_seconds: 3600 }) })).json<{ job_id: string }>();
    const cancelled = await old(`/api/v1/runs/${queued.job_id}/cancel`, { method: "POST" });
    expect((await cancelled.json<Job>()).status).toBe("cancelled");

    for (const id of [job_id, queued.job_id]) {
      expect((await old(`/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
      expect((await today(`/api/v1/runs/${id}`)).status).toBe(404);
    }
  });

  it("answers a job awaiting input that today's Worker submitted, and retries a failed one", async () => {
    const asking = await (await today("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ config: { simulate: { steps: 2, step_ms: 1, input_at_step: 1 } } }) })).json<{ job_id: string }>();
    expect((await drive(asking.job_id)).status).toBe("awaiting_input");
    const answered = await old(`/api/v1/runs/${asking.job_id}/input`, { method: "POST", headers: JSON_TYPE, body: JSON.stringify({ action: "approve" }) });
    expect(answered.status).toBe(200);
    expect((await drive(asking.job_id)).status).toBe("succeeded");

    const failing = await (await today("/api/v1/runs", { method: "POST", headers: JSON_TYPE, body: submitBody({ config: { simulate: { steps: 2, step_ms: 1, fail_at_step: 2 } } }) })).json<{ job_id: string }>();
    expect((await drive(failing.job_id)).status).toBe("failed");
    const retried = await old(`/api/v1/runs/${failing.job_id}/retry`, { method: "POST", headers: JSON_TYPE, body: JSON.stringify({ config: { simulate: { steps: 2, step_ms: 1 } } }) });
    expect(retried.status).toBe(202);
    const { job_id } = await retried.json<{ job_id: string }>();
    const job = await drive(job_id);
    expect(job.status).toBe("succeeded");
    expect(job.retry_of).toBe(failing.job_id);
  });
});
