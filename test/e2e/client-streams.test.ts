/**
 * The TypeScript client's streams (a job's, and the feed) against a real `wrangler dev`, through
 * a link that fails them: connections that fall silent with no one told, a deploy that cuts them
 * and refuses them for seconds, and a gateway that mangles an event. Each comes back after the last
 * event it had, with every event once, or gives up saying why. (Its requests: client-retries.test.ts.)
 */
import { describe, expect, it } from "vitest";
import { RunsClient, type FeedEvent, type RunEvent } from "../../client/index";
import { EVENT_STREAMS, startDeployingProxy, startProxy } from "./proxy";
import { BASE } from "./server";
import { simulate } from "./simulate";
import { withServer } from "./with-server";

withServer();

const client = new RunsClient({ baseUrl: BASE });
/** Reads `events` to their end; rejects with the error they end with, if any. */
const drain = async (events: AsyncGenerator<unknown>) => {
  for await (const _ of events);
};

/**
 * A job (`prompt`, `config`) watched through `via`, by its stream and its session's feed, while
 * `trouble` befalls them once both are open and have told something; `trouble` makes a job in the
 * session meanwhile and answers its id. Then the stream must have told every event once, as the
 * job's stream read again directly tells them, and the feed every change once, both jobs' ends
 * among them.
 */
async function watchedThroughTrouble(via: RunsClient, prompt: string, config: object, trouble: (session: string) => Promise<string>): Promise<void> {
  const session = `client-trouble-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const stop = new AbortController();
  const changes: FeedEvent[] = [];
  const watching = (async () => {
    for await (const change of via.watch({ session_id: session }, { signal: stop.signal })) changes.push(change);
  })().catch((error: unknown) => error);
  const told = (id: string, status: string) => changes.some((c) => c.event === "run" && c.job.job_id === id && c.job.status === status);
  // The feed is open once it has told of a job.
  const { job_id } = await client.submit({ prompt, session_id: session, config });
  await expect.poll(() => told(job_id, "running"), { timeout: 10_000 }).toBe(true);
  const events: RunEvent[] = [];
  const streaming = (async () => {
    for await (const event of via.stream(job_id)) events.push(event);
  })();
  await expect.poll(() => events.length, { timeout: 10_000 }).toBeGreaterThan(0);

  const meanwhile = await trouble(session);

  await streaming;
  const replay: RunEvent[] = [];
  for await (const event of client.stream(job_id)) replay.push(event);
  expect(events).toEqual(replay);
  await expect.poll(() => told(meanwhile, "succeeded") && told(job_id, "succeeded"), { timeout: 15_000 }).toBe(true);
  stop.abort();
  await watching;
  expect(new Set(changes.map((c) => c.id)).size).toBe(changes.length);
}

describe("a connection that dies with no one told", () => {
  it("a job's stream and the feed that fall silent, heartbeats and all, are opened again after the last event each had: every event once", async () => {
    let opened = 0;
    const proxy = await startProxy(BASE, { answer: (_method, pathname) => void (EVENT_STREAMS.test(pathname) && opened++) });
    await watchedThroughTrouble(new RunsClient({ baseUrl: proxy.base, idleTimeoutMs: 2000 }), "silenced", simulate(8, 500), async (session) => {
      expect(opened).toBe(2);
      // Both connections die unheard: nothing more comes through them, and nothing says so. (The
      // earlier client waited on them as long as its runtime let it: in Node, five minutes.)
      proxy.stall(EVENT_STREAMS);
      return (await client.submit({ prompt: "made while silent", session_id: session, config: simulate(1, 1) })).job_id;
    });
    expect(opened).toBeGreaterThanOrEqual(4);
    await proxy.close();
  });

  it("gives up on one that stays silent past its reconnects, saying so", async () => {
    const { job_id } = await client.submit({ prompt: "never heard", config: simulate(1, 1) });
    const proxy = await startProxy(BASE, {});
    proxy.stall(EVENT_STREAMS, true);
    const via = new RunsClient({ baseUrl: proxy.base, idleTimeoutMs: 500 });
    const silent = "no word from the server for 500 ms, heartbeats included";
    await expect(drain(via.stream(job_id, { maxReconnects: 1 }))).rejects.toThrow(silent);
    await expect(drain(via.watch({}, { maxReconnects: 1 }))).rejects.toThrow(silent);
    await proxy.close();
  });
});

describe("the client through a deploy", () => {
  it("a job's stream and the feed, cut and then refused with 503 for seconds, come back after the last event each had: every event once", async () => {
    const proxy = await startDeployingProxy(BASE);
    await watchedThroughTrouble(new RunsClient({ baseUrl: proxy.base }), "through a deploy", simulate(6, 1000), async (session) => {
      // The deploy: both cut, and refused while it lasts; a job made meanwhile.
      proxy.deploy();
      const meanwhile = await client.submit({ prompt: "made during the deploy", session_id: session, config: simulate(1, 1) });
      await expect.poll(() => new Set(proxy.refused).size, { timeout: 10_000 }).toBe(2);
      await new Promise((passed) => setTimeout(passed, 2000));
      proxy.done();
      return meanwhile.job_id;
    });
    await proxy.close();
  });

  it("gives up on a stream and a feed refused for longer than its reconnects allow, with the refusal; one answered empty each time kept dropping", async () => {
    const { job_id } = await client.submit({ prompt: "outlasted", config: simulate(1, 1) });
    const proxy = await startDeployingProxy(BASE);
    const via = new RunsClient({ baseUrl: proxy.base, maxRetries: 0 });
    proxy.deploy();
    const refusal = { status: 503, detail: "Service is being updated; retry shortly" };
    await expect(drain(via.watch({}, { maxReconnects: 1 }))).rejects.toMatchObject(refusal);
    await expect(drain(via.stream(job_id, { maxReconnects: 1 }))).rejects.toMatchObject(refusal);
    // Each tried twice: the first try, and one reconnection.
    expect(proxy.refused).toHaveLength(4);
    await proxy.close();

    // A gateway that answers every stream at once with nothing in it.
    const empty = await startProxy(BASE, { answer: (_method, pathname) => (EVENT_STREAMS.test(pathname) ? { status: 200, type: "text/event-stream", body: "" } : undefined) });
    const through = new RunsClient({ baseUrl: empty.base });
    await expect(drain(through.watch({}, { maxReconnects: 1 }))).rejects.toThrow("the feed kept dropping");
    await expect(drain(through.stream(job_id, { maxReconnects: 1 }))).rejects.toThrow(`stream of ${job_id} kept dropping`);
    await empty.close();
  });
});

describe("a stream a gateway mangled", () => {
  /** A proxy that writes the data of the job's event `id` as no JSON: on the first connection that carries it, or on `every` one. */
  async function mangling(id: string, every: boolean) {
    let opened = 0;
    let mangled = 0;
    const proxy = await startProxy(BASE, {
      answer: (_method, pathname) => void (EVENT_STREAMS.test(pathname) && opened++),
      rewrite: (block) => {
        const mangle = new RegExp(`^id: ${id}$`, "m").test(block) && (every || mangled++ === 0);
        return [`${mangle ? block.replace(/^data: .*$/m, "data: {not json") : block}\n\n`];
      },
    });
    return { proxy, opened: () => opened };
  }

  it("a block that cannot be read is read again from the last event, as after a dropped connection: every event once", async () => {
    const { job_id } = await client.submit({ prompt: "mangled once", config: simulate(2, 1) });
    const direct: RunEvent[] = [];
    for await (const event of client.stream(job_id)) direct.push(event);
    const { proxy, opened } = await mangling("2", false);
    const events: RunEvent[] = [];
    for await (const event of new RunsClient({ baseUrl: proxy.base }).stream(job_id)) events.push(event);
    expect(events).toEqual(direct);
    expect(opened()).toBe(2);
    await proxy.close();
  });

  it("one that stays so is neither skipped nor fetched for ever: the stream gives up with why", async () => {
    const { job_id } = await client.submit({ prompt: "mangled always", config: simulate(2, 1) });
    const { proxy, opened } = await mangling("2", true);
    const events: RunEvent[] = [];
    const reading = (async () => {
      for await (const event of new RunsClient({ baseUrl: proxy.base }).stream(job_id, { maxReconnects: 1 })) events.push(event);
    })();
    await expect(reading).rejects.toThrow(SyntaxError);
    expect(events.map((e) => e.id)).toEqual([1]);
    expect(opened()).toBe(2);
    await proxy.close();
  });
});
