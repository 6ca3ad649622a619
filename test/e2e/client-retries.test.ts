/**
 * The TypeScript client's requests against a real `wrangler dev`, on a link that fails them:
 * refusals while a deploy is under way or past a rate limit, answers lost on their way back or
 * never begun, and gateways in between that answer in their own words. What is safe to send again
 * is sent again, and nothing is done twice. (Its streams on such a link: client-streams.test.ts.)
 */
import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunsApiError, RunsClient, type RunEvent } from "../../client/index";
import { startProxy, type Proxy } from "./proxy";
import { BASE } from "./server";
import { simulate } from "./simulate";
import { withServer } from "./with-server";

withServer();

const client = new RunsClient({ baseUrl: BASE });
/** What a gateway that cannot reach the service answers, in Kong's words. */
const GATEWAY_SAYS = { message: "An invalid response was received from the upstream server" };

describe("the client's retries", () => {
  /**
   * A fetch that answers the first `times` requests matching `method` with `status` itself, as the
   * service does while a deploy is under way (503 "Service is being updated; retry shortly") or
   * past a rate limit (429), or a gateway in between that cannot reach it (any other status, in
   * Kong's words), and passes every other request to the server; `calls` counts them. `retryAfter`:
   * its `Retry-After`, or the headers that say how long to wait.
   */
  function refusing(method: string, status: number, retryAfter: string | Record<string, string> | null, times = 1) {
    const wait = typeof retryAfter === "string" ? { "Retry-After": retryAfter } : (retryAfter ?? {});
    const calls: string[] = [];
    /** The idempotency key each request was sent with (null: none). */
    const keys: (string | null)[] = [];
    const impl: typeof fetch = async (input, init) => {
      calls.push(`${init?.method ?? "GET"} ${new URL(String(input)).pathname}`);
      keys.push(new Headers(init?.headers).get("Idempotency-Key"));
      if ((init?.method ?? "GET") !== method || times-- <= 0) return fetch(input, init);
      const said = status === 503 ? { detail: "Service is being updated; retry shortly" } : status === 429 ? { detail: "Rate limit exceeded for this API key" } : GATEWAY_SAYS;
      return new Response(JSON.stringify(said), { status, headers: { "content-type": "application/json", ...wait } });
    };
    return { calls, keys, impl };
  }

  it("a read answered 503 while a deploy is under way is sent again after its Retry-After, and succeeds", async () => {
    const { job_id } = await client.submit({ prompt: "retried read", config: simulate(1, 1) });
    const { calls, impl } = refusing("GET", 503, "1");
    const started = Date.now();
    expect((await new RunsClient({ baseUrl: BASE, fetch: impl }).get(job_id)).job_id).toBe(job_id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(calls).toEqual([`GET /api/v1/runs/${job_id}`, `GET /api/v1/runs/${job_id}`]);
  });

  it("a submit answered 503 is sent again with the same idempotency key, the caller's or one the client made, so that no retry makes a second job; a 429 too", async () => {
    const unkeyed = refusing("POST", 503, "1");
    const tag = `own-key-${Date.now()}`;
    const submitted = await new RunsClient({ baseUrl: BASE, fetch: unkeyed.impl }).submit({ prompt: "once", tags: [tag], config: simulate(1, 1) });
    expect(unkeyed.calls).toEqual(["POST /api/v1/runs", "POST /api/v1/runs"]);
    expect(unkeyed.keys[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(unkeyed.keys[1]).toBe(unkeyed.keys[0]);
    expect(submitted.replayed).toBe(false);
    expect((await client.list({ tags: [tag] })).total).toBe(1);

    const key = `retry-${Date.now()}`;
    const keyed = refusing("POST", 503, "1");
    const withKey = await new RunsClient({ baseUrl: BASE, fetch: keyed.impl }).submit({ prompt: "keyed", config: simulate(1, 1) }, { idempotencyKey: key });
    expect(keyed.calls).toEqual(["POST /api/v1/runs", "POST /api/v1/runs"]);
    expect(keyed.keys).toEqual([key, key]);
    expect(withKey.replayed).toBe(false);

    // An empty key is none (the server would refuse it as a header): the client's own goes instead.
    const empty = refusing("POST", 503, "1");
    expect((await new RunsClient({ baseUrl: BASE, fetch: empty.impl }).submit({ prompt: "empty key", config: simulate(1, 1) }, { idempotencyKey: "" })).job_id).toMatch(/^run_/);
    expect(empty.keys[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(empty.keys[1]).toBe(empty.keys[0]);

    // Without retries, a submit carries only the caller's key, and a 503 is the caller's.
    const once = refusing("POST", 503, "1");
    await expect(new RunsClient({ baseUrl: BASE, fetch: once.impl, maxRetries: 0 }).submit({ prompt: "once", config: simulate(1, 1) })).rejects.toMatchObject({
      status: 503,
      detail: "Service is being updated; retry shortly",
    });
    expect(once.keys).toEqual([null]);

    const limited = refusing("POST", 429, "1");
    const after429 = await new RunsClient({ baseUrl: BASE, fetch: limited.impl }).submit({ prompt: "limited", config: simulate(1, 1) });
    expect(limited.calls).toEqual(["POST /api/v1/runs", "POST /api/v1/runs"]);
    expect((await client.get(after429.job_id)).job_id).toBe(after429.job_id);
  });

  it("a submit whose answer is lost after the job was made is sent again, and answered with that job: one job, not two", async () => {
    const tag = `lost-${Date.now()}`;
    let posts = 0;
    const losing: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (init?.method === "POST" && posts++ === 0) {
        await res.body?.cancel();
        throw new TypeError("fetch failed: the connection was lost");
      }
      return res;
    };
    const submitted = await new RunsClient({ baseUrl: BASE, fetch: losing }).submit({ prompt: "lost", tags: [tag], config: simulate(1, 1) });
    expect(posts).toBe(2);
    expect(submitted.replayed).toBe(false);
    const listed = await client.list({ tags: [tag] });
    expect(listed.total).toBe(1);
    expect(listed.jobs[0]!.job_id).toBe(submitted.job_id);
    // A retry of a job is made once the same way.
    const failed = await client.submit({ prompt: "to retry", tags: [`${tag}-retry`], config: simulate(1, 1, { fail_at_step: 1 }) });
    await client.waitForCompletion(failed.job_id);
    posts = 0;
    const retried = await new RunsClient({ baseUrl: BASE, fetch: losing }).retry(failed.job_id);
    expect(posts).toBe(2);
    expect((await client.list({ tags: [`${tag}-retry`] })).jobs.map((j) => j.job_id).sort()).toEqual([failed.job_id, retried.job_id].sort());
  });

  it("a read or a submit that a gateway in between answered 502, 504 or 500 is sent again after a backoff, the submit under its key: one job, made once though the gateway gave up on it after the service made it; a refusal of the request itself is not sent again", async () => {
    const { job_id } = await client.submit({ prompt: "read through a gateway", config: simulate(1, 1) });
    for (const status of [502, 504, 500]) {
      const gateway = refusing("GET", status, null);
      expect((await new RunsClient({ baseUrl: BASE, fetch: gateway.impl }).get(job_id)).job_id).toBe(job_id);
      expect(gateway.calls).toEqual([`GET /api/v1/runs/${job_id}`, `GET /api/v1/runs/${job_id}`]);
    }

    // A gateway that passed the submit on and, tired of waiting for the service's answer, answered
    // 504 itself (Envoy's words): the service made the job, and the repeat is answered with it.
    const tag = `gateway-${Date.now()}`;
    const keys: (string | null)[] = [];
    const timingOut: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (init?.method !== "POST") return res;
      keys.push(new Headers(init.headers).get("Idempotency-Key"));
      if (keys.length > 1) return res;
      await res.body?.cancel();
      return new Response("upstream request timeout", { status: 504, headers: { "content-type": "text/plain" } });
    };
    const submitted = await new RunsClient({ baseUrl: BASE, fetch: timingOut }).submit({ prompt: "timed out", tags: [tag], config: simulate(1, 1) });
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(keys[1]).toBe(keys[0]);
    const listed = await client.list({ tags: [tag] });
    expect(listed.jobs.map((j) => j.job_id)).toEqual([submitted.job_id]);

    // Without retries the submit has no key to be sent again with, and the 504 is the caller's.
    const unsent = refusing("POST", 504, null);
    await expect(new RunsClient({ baseUrl: BASE, fetch: unsent.impl, maxRetries: 0 }).submit({ prompt: "once", config: simulate(1, 1) })).rejects.toMatchObject({ status: 504 });
    expect(unsent.calls).toHaveLength(1);

    // The service's refusal of the request itself is final: sent once.
    const calls: string[] = [];
    const counting: typeof fetch = (input, init) => (calls.push(String(input)), fetch(input, init));
    await expect(new RunsClient({ baseUrl: BASE, fetch: counting }).get("run_nowhere")).rejects.toMatchObject({ status: 404, detail: "Job not found: run_nowhere" });
    expect(calls).toHaveLength(1);
  });

  it("an answer to a request for input whose reply is lost is sent again under the same key, and given once", async () => {
    const { job_id } = await client.submit({ prompt: "ask me", config: simulate(2, 1, { input_at_step: 1 }) });
    expect((await client.waitForCompletion(job_id, { untilInput: true })).status).toBe("awaiting_input");
    let posts = 0;
    const keys = new Set<string | null>();
    const losing: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (init?.method !== "POST") return res;
      keys.add(new Headers(init.headers).get("Idempotency-Key"));
      if (posts++ === 0) {
        await res.body?.cancel();
        throw new TypeError("fetch failed: the connection was lost");
      }
      return res;
    };
    await new RunsClient({ baseUrl: BASE, fetch: losing }).input(job_id, { action: "revise", input: "again" });
    expect(posts).toBe(2);
    expect(keys.size).toBe(1);
    // One revision: the step ran again and asks once more; approved, the job ends having asked twice.
    const asked = await client.waitForCompletion(job_id, { untilInput: true });
    expect(asked.input_request!.output).toContain("(revised after: again)");
    await client.input(job_id, { action: "approve" });
    expect((await client.waitForCompletion(job_id)).status).toBe("succeeded");
    const events: RunEvent[] = [];
    for await (const event of client.stream(job_id)) events.push(event);
    expect(events.filter((e) => e.event === "input_required")).toHaveLength(2);
  });

  it("a delete whose answer is lost is sent again, and its 404 then means done; an unknown id, or a lost answer with no retries, still throws", async () => {
    const { job_id } = await client.submit({ prompt: "delete me", config: simulate(1, 1) });
    await client.waitForCompletion(job_id);
    const sent: string[] = [];
    const losing = (times: number): typeof fetch => async (input, init) => {
      const res = await fetch(input, init);
      if (init?.method !== "DELETE") return res;
      sent.push(`${res.status} ${new URL(String(input)).pathname}`);
      if (times-- <= 0) return res;
      await res.body?.cancel();
      throw new TypeError("fetch failed: the connection was lost");
    };
    await new RunsClient({ baseUrl: BASE, fetch: losing(1) }).delete(job_id);
    expect(sent).toEqual([`204 /api/v1/runs/${job_id}`, `404 /api/v1/runs/${job_id}`]);
    await expect(client.get(job_id)).rejects.toMatchObject({ status: 404 });

    // A 404 to a delete whose every answer came back is the caller's: not found.
    await expect(client.delete(job_id)).rejects.toMatchObject({ status: 404, detail: `Job not found: ${job_id}` });
    // With no retries, the lost answer is the caller's to judge.
    const other = await client.submit({ prompt: "delete me too", config: simulate(1, 1) });
    await client.waitForCompletion(other.job_id);
    sent.length = 0;
    await expect(new RunsClient({ baseUrl: BASE, fetch: losing(1), maxRetries: 0 }).delete(other.job_id)).rejects.toThrow("the connection was lost");
    expect(sent).toEqual([`204 /api/v1/runs/${other.job_id}`]);
    // A running job's delete, refused after a lost try, is still refused: only a 404 is done.
    const running = await client.submit({ prompt: "running", config: simulate(2, 60_000) });
    sent.length = 0;
    await expect(new RunsClient({ baseUrl: BASE, fetch: losing(1) }).delete(running.job_id)).rejects.toMatchObject({ status: 400, detail: "Cannot delete running job. Cancel it first." });
    expect(sent).toHaveLength(2);
    await client.delete(running.job_id, { force: true });
  });

  it("a cancel whose answer is lost is sent again, and answers the cancelled job; one of a job that ended otherwise is still refused", async () => {
    const sent: string[] = [];
    const losing = (times: number): typeof fetch => async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).endsWith("/cancel")) return res;
      sent.push(String(res.status));
      if (times-- <= 0) return res;
      await res.body?.cancel();
      throw new TypeError("fetch failed: the connection was lost");
    };
    const running = await client.submit({ prompt: "cancel me", config: simulate(2, 60_000) });
    const cancelled = await new RunsClient({ baseUrl: BASE, fetch: losing(1) }).cancel(running.job_id);
    expect(sent).toEqual(["200", "400"]);
    expect(cancelled).toMatchObject({ job_id: running.job_id, status: "cancelled" });

    // A cancel refused with every answer back is the caller's to hear, cancelled job or not.
    await expect(client.cancel(running.job_id)).rejects.toMatchObject({ status: 400, detail: "Cannot cancel job with status: cancelled" });
    // Sent again after a lost try, a cancel of a job that succeeded meanwhile is refused as it is.
    const done = await client.submit({ prompt: "done", config: simulate(1, 1) });
    await client.waitForCompletion(done.job_id);
    sent.length = 0;
    await expect(new RunsClient({ baseUrl: BASE, fetch: losing(1) }).cancel(done.job_id)).rejects.toMatchObject({ status: 400, detail: "Cannot cancel job with status: succeeded" });
    expect(sent).toEqual(["400", "400"]);
    // With no retries, the lost answer is thrown.
    const other = await client.submit({ prompt: "cancel me too", config: simulate(2, 60_000) });
    sent.length = 0;
    await expect(new RunsClient({ baseUrl: BASE, fetch: losing(1), maxRetries: 0 }).cancel(other.job_id)).rejects.toThrow("the connection was lost");
    expect(sent).toEqual(["200"]);
    await client.delete(running.job_id);
    await client.delete(other.job_id);
  });

  it("gives up after maxRetries, does not wait out a Retry-After of more than a minute, waits out a retry-after-ms, and takes a Retry-After it cannot read for none", async () => {
    const stubborn = refusing("GET", 503, "0", 10);
    await expect(new RunsClient({ baseUrl: BASE, fetch: stubborn.impl, maxRetries: 1 }).stats()).rejects.toMatchObject({ status: 503 });
    expect(stubborn.calls).toHaveLength(2);
    const never = refusing("GET", 503, "0", 10);
    await expect(new RunsClient({ baseUrl: BASE, fetch: never.impl, maxRetries: 0 }).stats()).rejects.toMatchObject({ status: 503 });
    expect(never.calls).toHaveLength(1);
    const long = refusing("GET", 429, "120");
    await expect(new RunsClient({ baseUrl: BASE, fetch: long.impl }).stats()).rejects.toMatchObject({ status: 429 });
    expect(long.calls).toHaveLength(1);
    // OpenAI's finer header, read as the service reads a model provider's: no sooner than it says.
    const precise = refusing("GET", 429, { "retry-after-ms": "1200" });
    const started = Date.now();
    await new RunsClient({ baseUrl: BASE, fetch: precise.impl }).stats();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1200);
    expect(precise.calls).toHaveLength(2);
    // A wait no one can read (a gateway's own words) names none: the request is sent again after a
    // backoff, as with no header (the earlier client gave up on it at once).
    for (const garbled of ["soon", "-5"]) {
      const unclear = refusing("GET", 503, garbled);
      expect((await new RunsClient({ baseUrl: BASE, fetch: unclear.impl }).stats()).total_jobs).toEqual(expect.any(Number));
      expect(unclear.calls).toHaveLength(2);
    }
  });

  it("a request whose answer has not begun within timeoutMs is sent again when that cannot act twice, else given up, saying so", async () => {
    const { job_id } = await client.submit({ prompt: "answered late", config: simulate(1, 1) });
    let asked = 0;
    // The first read of the job gets no answer at all, its connection held open.
    const proxy = await startProxy(BASE, { answer: (_method, pathname) => (pathname === `/api/v1/runs/${job_id}` && asked++ === 0 ? "hold" : undefined) });
    expect((await new RunsClient({ baseUrl: proxy.base, timeoutMs: 500 }).get(job_id)).job_id).toBe(job_id);
    expect(asked).toBe(2);
    asked = 0;
    await expect(new RunsClient({ baseUrl: proxy.base, timeoutMs: 500, maxRetries: 0 }).get(job_id)).rejects.toThrow("no answer from the server within 500 ms");
    expect(asked).toBe(1);
    await proxy.close();
  });
});

describe("refusals from something in between", () => {
  /**
   * A real HTTP proxy in front of the service, answering some requests as the gateways and pages in
   * front of a service do when they cannot reach it: nothing of the API's own `detail`.
   */
  const ANSWERS: Record<string, { status: number; type: string; body: string }> = {
    "/api/v1/runs/run_kong": { status: 502, type: "application/json", body: '{"message":"An invalid response was received from the upstream server"}' },
    "/api/v1/runs/run_envoy": { status: 504, type: "text/plain", body: "upstream request timeout" },
    "/api/v1/runs/run_page": { status: 502, type: "text/html", body: "<!DOCTYPE html><html><body><h1>Bad gateway</h1><p>Error code 502</p></body></html>" },
    "/api/v1/runs/run_null": { status: 500, type: "application/json", body: "null" },
    "/api/v1/runs/run_api": { status: 404, type: "application/json", body: '{"detail":"Job not found: run_api"}' },
  };
  let gateway: Proxy;
  /** How many times each path was asked for. */
  const asked = new Map<string, number>();
  beforeAll(async () => {
    gateway = await startProxy(BASE, { answer: (_method, pathname) => (asked.set(pathname, (asked.get(pathname) ?? 0) + 1), ANSWERS[pathname]) });
  });
  afterAll(() => gateway?.close());

  it("the client raises what the gateway says, with its status; the CLI prints it so", async () => {
    const via = new RunsClient({ baseUrl: gateway.base });
    const refusal = (id: string) => via.get(id).catch((e: unknown) => e);
    const kong = await refusal("run_kong");
    expect(kong).toBeInstanceOf(RunsApiError);
    expect(kong).toMatchObject({ status: 502, detail: "An invalid response was received from the upstream server", message: "502: An invalid response was received from the upstream server" });
    expect(await refusal("run_envoy")).toMatchObject({ status: 504, detail: "upstream request timeout", message: "504: upstream request timeout" });
    // An error page says nothing a terminal can show: its status line does.
    expect(await refusal("run_page")).toMatchObject({ status: 502, detail: "Bad Gateway", message: "502: Bad Gateway" });
    const nothing = await refusal("run_null");
    expect(nothing).toBeInstanceOf(RunsApiError);
    expect(nothing).toMatchObject({ status: 500, detail: "Internal Server Error" });
    // The API's own refusals are as before.
    expect(await refusal("run_api")).toMatchObject({ status: 404, detail: "Job not found: run_api", message: "404: Job not found: run_api" });
    // Each gateway's refusal was sent again twice first (it might have passed); the API's was not.
    expect(Object.fromEntries(asked)).toEqual({ "/api/v1/runs/run_kong": 3, "/api/v1/runs/run_envoy": 3, "/api/v1/runs/run_page": 3, "/api/v1/runs/run_null": 3, "/api/v1/runs/run_api": 1 });

    // The CLI (spawned, so that this process's gateway can answer it meanwhile).
    const run = spawn("node", ["cli/runs.mjs", "status", "run_kong"], { env: { ...process.env, RUNS_API_URL: gateway.base } });
    let stderr = "";
    run.stderr.on("data", (d) => (stderr += String(d)));
    const code = await new Promise<number | null>((exited) => run.on("close", exited));
    expect(stderr.trim()).toBe("502: An invalid response was received from the upstream server");
    expect(code).toBe(5);
  });
});
