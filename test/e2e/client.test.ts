/** The TypeScript client against a real `wrangler dev` (on a link that fails it: client-retries.test.ts and client-streams.test.ts; the `runs` CLI: cli.test.ts). */
import { describe, expect, it } from "vitest";
import { build } from "esbuild";
import { RunsApiError, RunsClient, type FeedEvent, type RunEvent } from "../../client/index";
import { insecureOrigin, launchChromiumWithInsecureName } from "./browser";
import { startProxy } from "./proxy";
import { BASE } from "./server";
import { simulate } from "./simulate";
import { withServer } from "./with-server";

withServer();

const client = new RunsClient({ baseUrl: BASE });

/**
 * A fetch whose first connection to a matching URL dies once a whole event has passed, as a flaky
 * network would; `requests` records the Last-Event-ID each such connection was opened with.
 */
function cutOnce(matches: (url: string) => boolean, requests: (string | null)[]): typeof fetch {
  let cut = false;
  return async (input, init) => {
    const res = await fetch(input, init);
    if (!matches(String(input))) return res;
    requests.push(new Headers(init?.headers).get("Last-Event-ID"));
    if (cut) return res;
    cut = true;
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let passed = "";
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (/(^|\n)id: [^\n]*\n[\s\S]*?\n\n/.test(passed)) {
          await reader.cancel();
          return controller.error(new Error("connection reset"));
        }
        const { done, value } = await reader.read();
        if (done) return controller.close();
        passed += decoder.decode(value, { stream: true });
        controller.enqueue(value);
      },
    });
    return new Response(body, { headers: res.headers });
  };
}

/**
 * An event stream written another way the format allows, block by block: a comment first, no
 * space after a field's colon, a JSON `data` value broken over two `data` lines after its first
 * comma (lines joined with a newline, whitespace between JSON tokens), and line ends taking turns
 * at CRLF, CR and LF.
 */
function rewritten(block: string, n: number): string {
  const eol = ["\r\n", "\r", "\n"][n % 3];
  const lines = [": relayed"];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    const comma = value.indexOf(",");
    if (colon <= 0) lines.push(line);
    else if (field === "data" && value.startsWith("{") && comma > 0) lines.push(`data:${value.slice(0, comma + 1)}`, `data:${value.slice(comma + 1)}`);
    else lines.push(`${field}:${value}`);
  }
  return lines.join(eol) + eol + eol;
}

/**
 * A block rewritten (`rewritten`) and written in two writes cut after its first CR, so that a CRLF
 * may come in two reads: as a gateway that writes event streams its own way relays them.
 */
function relayedBlock(block: string, n: number): string[] {
  const text = rewritten(block, n);
  const cut = text.indexOf("\r") + 1 || text.length;
  return [text.slice(0, cut), text.slice(cut)];
}

describe("the TypeScript client", () => {
  it("submits, waits honouring retry_after, and reads the result and output", async () => {
    const submitted = await client.submit({ prompt: "client", config: simulate(2, 300) }, { idempotencyKey: `c-${Date.now()}` });
    expect(submitted).toMatchObject({ status: "running", replayed: false }); // a slot was free at submit
    const polls: string[] = [];
    const job = await client.waitForCompletion(submitted.job_id, { onUpdate: (j) => polls.push(j.status) });
    expect(job.status).toBe("succeeded");
    expect(polls.length).toBeLessThanOrEqual(3); // one poll per retry_after (2 s), not a busy loop

    const result = await client.result(job.job_id);
    expect(result.result).toBe("Step 1/2 (step_1): simulated answer to: client\nStep 2/2 (step_2): simulated answer to: client\n");
    const part = await client.output(job.job_id, { start: 5, end: 8 });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe(result.result!.slice(5, 9));
  });

  it("stops waiting for a job as soon as its signal is aborted, also while a poll is on its way", async () => {
    const { job_id } = await client.submit({ prompt: "abandoned", config: simulate(2, 3000) });
    const abort = new AbortController();
    const polls: string[] = [];
    // The caller gives up while the first poll is on its way back.
    const givingUp: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      polls.push(new URL(String(input)).pathname);
      abort.abort();
      return res;
    };
    const waiting = new RunsClient({ baseUrl: BASE, fetch: givingUp }).waitForCompletion(job_id, { signal: abort.signal });
    await expect(waiting).rejects.toMatchObject({ name: "AbortError" });
    expect(polls).toEqual([`/api/v1/runs/${job_id}`]); // no poll after it, though the job still runs
    expect((await client.get(job_id)).status).toBe("running");
    await client.cancel(job_id);
  });

  it("replays an idempotent submission", async () => {
    const key = `idem-${Date.now()}`;
    const first = await client.submit({ prompt: "once" }, { idempotencyKey: key });
    const again = await client.submit({ prompt: "once" }, { idempotencyKey: key });
    expect(again).toMatchObject({ job_id: first.job_id, replayed: true });
    await client.delete(first.job_id, { force: true });
  });

  it("pages through every job of a list", async () => {
    const session = `client-list-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await client.submit({ prompt: `p${i}`, session_id: session, config: simulate(1, 1) })).job_id);
    const seen: string[] = [];
    for await (const job of client.listAll({ session_id: session, page_size: 2 })) seen.push(job.job_id);
    expect(seen).toEqual([...ids].reverse());
  });

  it("raises typed errors carrying status and detail", async () => {
    const missing = await client.get("run_missing").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(RunsApiError);
    expect(missing).toMatchObject({ status: 404, detail: "Job not found: run_missing" });
    // The id of the server's log line for the request, to quote when asking why.
    expect((missing as RunsApiError).requestId).toMatch(/^[0-9a-f-]{36}$/);

    const { job_id } = await client.submit({ prompt: "busy", config: simulate(3, 2000) });
    const refused = await client.delete(job_id).catch((e: unknown) => e);
    expect(refused).toMatchObject({ status: 400, detail: "Cannot delete running job. Cancel it first." });
    expect((await client.cancel(job_id)).status).toBe("cancelled");
    await client.delete(job_id);
    expect(await client.get(job_id).catch((e: RunsApiError) => e.status)).toBe(404);
  });

  it("streams every event once, resuming with Last-Event-ID after the connection is cut", async () => {
    const { job_id } = await client.submit({ prompt: "stream", config: simulate(3, 400) });
    const streamRequests: (string | null)[] = [];
    const flaky = cutOnce((url) => url.endsWith("/stream"), streamRequests);
    const events: RunEvent[] = [];
    for await (const event of new RunsClient({ baseUrl: BASE, fetch: flaky }).stream(job_id)) events.push(event);

    expect(streamRequests.length).toBeGreaterThanOrEqual(2);
    expect(streamRequests[0]).toBe("0");
    expect(Number(streamRequests[1])).toBeGreaterThan(0);
    const replay: RunEvent[] = [];
    for await (const event of client.stream(job_id)) replay.push(event);
    expect(events).toEqual(replay);
    expect(events.map((e) => e.id)).toEqual(replay.map((_, i) => i + 1));
    expect(events.at(-1)).toMatchObject({ event: "complete", data: { status: "succeeded" } });
  });
});

describe("the client's reading of event streams", () => {
  it("reads a job's stream and the feed written another way the format allows (CRLF or CR line ends, no space after a colon, data over two lines, comments), as through a gateway that rewrites them", async () => {
    const proxy = await startProxy(BASE, { rewrite: relayedBlock });
    const abort = new AbortController();
    try {
      const session = `relayed-${Date.now()}`;
      const relayed = new RunsClient({ baseUrl: proxy.base });
      const watched = (source: RunsClient) =>
        (async () => {
          const seen: FeedEvent[] = [];
          for await (const event of source.watch({ session_id: session }, { signal: abort.signal })) {
            seen.push(event);
            if (event.event === "deleted") break;
          }
          return seen;
        })();
      const throughProxy = watched(relayed);
      const direct = watched(client);
      // Should the test fail before the job is deleted, the watchers stop with it (finally).
      for (const watcher of [throughProxy, direct]) watcher.catch(() => {});
      await new Promise((r) => setTimeout(r, 300));
      const { job_id } = await client.submit({ prompt: "relayed", session_id: session, config: simulate(3, 100) });
      await client.waitForCompletion(job_id);

      const events: RunEvent[] = [];
      for await (const event of relayed.stream(job_id)) events.push(event);
      const replay: RunEvent[] = [];
      for await (const event of client.stream(job_id)) replay.push(event);
      expect(events).toEqual(replay);
      expect(events.map((e) => e.id)).toEqual(replay.map((_, i) => i + 1));
      expect(events.at(-1)).toMatchObject({ event: "complete", data: { status: "succeeded" } });

      await client.delete(job_id);
      const [fed, fedDirect] = await Promise.all([throughProxy, direct]);
      expect(fed).toEqual(fedDirect);
      expect(fed.filter((e) => e.event === "run").at(-1)).toMatchObject({ job: { job_id, status: "succeeded" } });
      expect(fed.at(-1)).toEqual({ id: expect.any(String), event: "deleted", job_id });
    } finally {
      abort.abort();
      await proxy.close();
    }
  });
});

describe("the client in a browser", () => {
  it("submits and retries from a page that is not a secure context (a phone on the LAN, through a proxy), each with a key of its own", async () => {
    // The client as a browser loads it, served with a blank page at a name no browser counts secure.
    const bundled = await build({ entryPoints: ["client/index.ts"], bundle: true, format: "esm", platform: "browser", write: false });
    const served: Record<string, { status: number; type: string; body: string }> = {
      "/client.js": { status: 200, type: "text/javascript", body: bundled.outputFiles[0].text },
      "/blank": { status: 200, type: "text/html", body: "<!doctype html><title>client</title>" },
    };
    const proxy = await startProxy(BASE, { answer: (_method, pathname) => served[pathname] });
    const browser = await launchChromiumWithInsecureName();
    try {
      const page = await browser.newPage();
      const keys: (string | undefined)[] = [];
      page.on("request", (request) => request.method() === "POST" && keys.push(request.headers()["idempotency-key"]));
      await page.goto(`${insecureOrigin(proxy.base)}/blank`);
      expect(await page.evaluate(() => window.isSecureContext)).toBe(false);
      // Given as text, so that the test runner's own rewriting of import() does not reach the page.
      const made = (await page.evaluate(`(async () => {
        const { RunsClient } = await import("/client.js");
        const runs = new RunsClient({ baseUrl: location.origin });
        const first = await runs.submit({ prompt: "from a phone", config: { simulate: { steps: 1, step_ms: 1, fail_at_step: 1 } } });
        const ended = await runs.waitForCompletion(first.job_id);
        const again = await runs.retry(first.job_id);
        return { first: first.job_id, ended: ended.status, again: again.job_id };
      })()`)) as { first: string; ended: string; again: string };
      expect(made.ended).toBe("failed");
      expect((await client.get(made.again)).retry_of).toBe(made.first);
      expect(keys).toHaveLength(2);
      for (const key of keys) expect(key).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(keys[0]).not.toBe(keys[1]);
    } finally {
      await browser.close();
      await proxy.close();
    }
  });
});

describe("the client's feed and tokens", () => {
  it("watches the feed, filtered, every change once, resuming with Last-Event-ID after the connection is cut", async () => {
    const session = `watch-${Date.now()}`;
    const feedRequests: (string | null)[] = [];
    const flaky = cutOnce((url) => url.includes("/api/v1/runs/events"), feedRequests);
    const watcher = new RunsClient({ baseUrl: BASE, fetch: flaky });
    const abort = new AbortController();
    const seen: FeedEvent[] = [];
    const watching = (async () => {
      try {
        for await (const event of watcher.watch({ session_id: session, tags: ["watched"] }, { signal: abort.signal })) {
          seen.push(event);
          if (event.event === "deleted") abort.abort();
        }
      } catch (error) {
        if (!abort.signal.aborted) throw error;
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const other = await client.submit({ prompt: "unwatched", session_id: session, config: simulate(1, 1) });
    const { job_id } = await client.submit({ prompt: "watched", session_id: session, tags: ["watched"], config: simulate(3, 300) });
    await client.waitForCompletion(job_id);
    await client.delete(job_id);
    await watching;

    expect(feedRequests.length).toBeGreaterThanOrEqual(2);
    expect(feedRequests[0]).toBeNull();
    expect(Number(feedRequests[1])).toBeGreaterThan(0);
    // One projection here: each id is one number.
    const ids = seen.map((e) => Number(e.id));
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    const runs = seen.filter((e): e is Extract<FeedEvent, { event: "run" }> => e.event === "run");
    expect(runs.every((e) => e.job.job_id === job_id)).toBe(true);
    expect(runs.at(-1)!.job.status).toBe("succeeded");
    expect(seen.at(-1)).toMatchObject({ event: "deleted", job_id });
    expect(seen.some((e) => e.event === "run" && e.job.job_id === other.job_id)).toBe(false);
  });

  it("mints a token, and a client holding only the token reaches just its session", async () => {
    const session = `token-${Date.now()}`;
    const mine = (await client.submit({ prompt: "mine", session_id: session, config: simulate(1, 1) })).job_id;
    const others = (await client.submit({ prompt: "not mine", session_id: `${session}-x`, config: simulate(1, 1) })).job_id;
    const minted = await client.mintToken({ scopes: ["read", "submit"], session_id: session, max_submits: 1 });
    expect(minted).toMatchObject({ scopes: ["read", "submit"], session_id: session, max_submits: 1 });
    const browser = new RunsClient({ baseUrl: BASE, apiKey: minted.token });
    const { token: _, ...granted } = minted;
    expect(await browser.verify()).toEqual({ ...granted, submits_left: 1 });
    expect((await browser.list()).jobs.map((j) => j.job_id)).toEqual([mine]);
    await expect(browser.get(others)).rejects.toMatchObject({ status: 404, detail: `Job not found: ${others}` });
    const submitted = await browser.submit({ prompt: "from the token", config: simulate(1, 1) });
    expect((await client.get(submitted.job_id)).session_id).toBe(session);
    expect((await browser.verify()).submits_left).toBe(0);
    await expect(browser.submit({ prompt: "one too many" })).rejects.toMatchObject({ status: 403, detail: "Token submit limit reached" });
    await expect(browser.stats()).rejects.toMatchObject({ status: 403, detail: "Token does not allow stats" });
  });
});


describe("bulk clean-up", () => {
  it("the client cancels, then deletes, a session's jobs in bulk, and follows the progress", async () => {
    const session = `bulk-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await client.submit({ prompt: `bulk ${i}`, session_id: session, config: simulate(2, 60_000) })).job_id);
    const follow = async (bulkId: string) => {
      for (let i = 0; i < 100; i++) {
        const progress = await client.bulkProgress(bulkId);
        if (progress.state === "done") return progress;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`bulk ${bulkId} did not finish`);
    };
    const cancelled = await client.bulk("cancel", { session_id: session });
    expect(cancelled.matched).toBe(3);
    expect(await follow(cancelled.bulk_id)).toMatchObject({ action: "cancel", matched: 3, done: 3, failed: 0, state: "done" });
    for (const id of ids) expect((await client.get(id)).status).toBe("cancelled");
    const deleted = await client.bulk("delete", { job_ids: ids });
    expect(await follow(deleted.bulk_id)).toMatchObject({ action: "delete", done: 3, state: "done" });
    for (const id of ids) await expect(client.get(id)).rejects.toMatchObject({ status: 404 });
    await expect(client.bulkProgress("bulk_nope")).rejects.toMatchObject({ status: 404, detail: "Bulk operation not found: bulk_nope" });
  });
});
