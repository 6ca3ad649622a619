/**
 * A tenant's live feed with its projection in 3 shards (see vitest.config.ts, "workers-shards"):
 * every shard's changes merged into one feed, each event's id a position in all of them, resumed
 * from any event by a plain reader and by the typed client, and a watcher far behind let go.
 */
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Job } from "../../src/schemas";
import { projectionName, shardOf } from "../../src/tenant/shards";
import { RunsClient, type FeedEvent } from "../../client/index";
import { MAX_BEHIND } from "../../src/tenant/feed";
import { api, enterJobs, getJob, readUntilQuiet, settle } from "../helpers";
import { SHARDS, submitIn } from "./sharded";

describe("the live feed over shards", () => {
  /** The first `count` events (fewer if the stream ends, or if `withinMs` is given and passes first). */
  async function read(res: Response, count: number, withinMs?: number): Promise<{ id: string; event: string; job: Job }[]> {
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const deadline = withinMs === undefined ? null : new Promise<null>((resolve) => setTimeout(() => resolve(null), withinMs));
    let text = "";
    const events: { id: string; event: string; job: Job }[] = [];
    while (events.length < count) {
      const next = await (deadline ? Promise.race([reader.read(), deadline]) : reader.read());
      if (next === null) break;
      const { value, done } = next;
      if (done) break;
      text += value;
      const end = text.lastIndexOf("\n\n");
      if (end < 0) continue;
      for (const block of text.slice(0, end + 2).split("\n\n")) {
        if (block.trim() === "" || block.startsWith(":")) continue;
        const id = /^id: (.*)$/m.exec(block)![1];
        events.push({ id, event: /^event: (.*)$/m.exec(block)![1], job: JSON.parse(/^data: (.*)$/m.exec(block)![1]) as Job });
      }
      text = text.slice(end + 2);
    }
    await reader.cancel();
    return events;
  }

  it("merges every shard's changes, each event's id a position in all of them, and resumes from any", async () => {
    const res = await api("/api/v1/runs/events?session_id=fed");
    expect(res.status).toBe(200);
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await submitIn("fed"));
    const events = await read(res, 8);
    expect(events.map((e) => e.job.job_id).sort()).toEqual([...ids].sort());
    for (const [i, event] of events.entries()) {
      expect(event.event).toBe("run");
      const at = event.id.split(".").map(Number);
      expect(at).toHaveLength(SHARDS);
      if (i > 0) {
        const before = events[i - 1].id.split(".").map(Number);
        at.forEach((n, s) => expect(n).toBeGreaterThanOrEqual(before[s]));
      }
    }
    for (let from = 0; from < events.length; from++) {
      const resumed = await api("/api/v1/runs/events?session_id=fed", { headers: { "Last-Event-ID": events[from].id } });
      expect(resumed.status).toBe(200);
      const rest = events.length - from - 1;
      // Exactly the changes after it, each once; the shards' changes interleave as they arrive.
      if (rest > 0) expect((await read(resumed, rest)).map((e) => e.job.job_id).sort()).toEqual(events.slice(from + 1).map((e) => e.job.job_id).sort());
      else await resumed.body!.cancel();
    }
  });

  it("the typed client watches it and resumes from an event's id holding every shard's position", async () => {
    const client = new RunsClient({ baseUrl: "http://localhost", fetch: (input, init) => SELF.fetch(input, init) });
    const abort = new AbortController();
    const seen: FeedEvent[] = [];
    const watching = (async () => {
      try {
        for await (const event of client.watch({ session_id: "fed-client" }, { signal: abort.signal })) {
          seen.push(event);
          if (seen.length === 6) abort.abort();
        }
      } catch (error) {
        if (!abort.signal.aborted) throw error;
      }
    })();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await submitIn("fed-client"));
    await watching;
    expect(seen.map((e) => (e.event === "run" ? e.job.job_id : null)).sort()).toEqual([...ids].sort());
    for (const event of seen) expect(event.id).toMatch(/^\d+\.\d+\.\d+$/);

    const rest: FeedEvent[] = [];
    const resumed = new AbortController();
    try {
      for await (const event of client.watch({ session_id: "fed-client" }, { after: seen[1].id, signal: resumed.signal })) {
        rest.push(event);
        if (rest.length === 4) resumed.abort();
      }
    } catch (error) {
      if (!resumed.signal.aborted) throw error;
    }
    expect(rest.map((e) => (e.event === "run" ? e.job.job_id : null)).sort()).toEqual(seen.slice(2).map((e) => (e.event === "run" ? e.job.job_id : null)).sort());
  });

  it("tells a deletion from the job's shard", async () => {
    const id = await submitIn("fed-deleted");
    const res = await api("/api/v1/runs/events?session_id=fed-deleted");
    await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
    await settle(id);
    expect((await api(`/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
    await settle(id);
    const events = await read(res, 2);
    expect(events.map((e) => [e.event, e.job.job_id, e.event === "run" ? e.job.status : null])).toEqual([
      ["run", id, "cancelled"],
      ["deleted", id, null],
    ]);
  });

  it("lets a watcher more than 5,000 events behind go, to resume with Last-Event-ID from every shard's position", async () => {
    const behind = await api("/api/v1/runs/events?session_id=fed-behind");
    const template = await getJob(await submitIn("fed-behind"));
    const count = MAX_BEHIND + 100;
    const ids = await enterJobs(template, count, (i) => projectionName("default", i % SHARDS));
    // Not read until now: it was sent the changes up to its limit, then let go.
    const told = await read(behind, 1 + count);
    expect(told.length).toBeGreaterThan(MAX_BEHIND);
    expect(told.length).toBeLessThan(1 + count);
    // From its last event's position in every shard: exactly the changes it was not sent.
    const resumed = await api("/api/v1/runs/events?session_id=fed-behind", { headers: { "Last-Event-ID": told.at(-1)!.id } });
    const rest = await read(resumed, 1 + count - told.length);
    const jobIds = [...told, ...rest].map((e) => e.job.job_id);
    expect(jobIds).toHaveLength(1 + count);
    expect(new Set(jobIds)).toEqual(new Set([template.job_id, ...ids]));
  });

  it("catches a watcher up on every change it missed, many batches of them, before it goes live", async () => {
    const first = env.PROJECTIONS.getByName(projectionName("default", 0));
    const from = await first.feedHead();
    const template = await getJob(await submitIn("fed-catch-up"));
    const count = 450;
    const ids = await enterJobs(template, count, () => projectionName("default", 0));
    // From the first shard's position alone (the others from now): its log's changes, read back in batches.
    const resumed = await api("/api/v1/runs/events?session_id=fed-catch-up", { headers: { "Last-Event-ID": String(from) } });
    expect(resumed.status).toBe(200);
    // The job the entries copy is told too when its own change went to the first shard.
    const expected = shardOf(template.job_id, SHARDS) === 0 ? [template.job_id, ...ids] : ids;
    const told = await read(resumed, count + 1, 3_000);
    expect(told.map((e) => e.job.job_id).sort()).toEqual([...expected].sort());
  });

  it("sends one `: ping` a heartbeat, the first shard's, not one from each shard", async () => {
    const res = await api("/api/v1/runs/events?session_id=fed-ping");
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    // Each shard's heartbeat driven by hand, the first shard's last: the pings of the others come first if they are passed on.
    for (let shard = SHARDS - 1; shard >= 0; shard--) {
      await runInDurableObject(env.PROJECTIONS.getByName(projectionName("default", shard)), (instance) =>
        (instance as unknown as { feed: { watchers: { beat(): void } } }).feed.watchers.beat(),
      );
    }
    const text = await readUntilQuiet(reader);
    await reader.cancel();
    expect(text).toBe(": ping\n\n");
  });

  it("takes a position from before the tenant had shards, and refuses a malformed one", async () => {
    const legacy = await api("/api/v1/runs/events", { headers: { "Last-Event-ID": "3" } });
    expect(legacy.status).toBe(200);
    await legacy.body!.cancel();
    for (const bad of ["1.2", "1.2.3.4", "1..2", "a.b.c"]) {
      const res = await api("/api/v1/runs/events", { headers: { "Last-Event-ID": bad } });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ detail: `Invalid event id: ${bad}` });
    }
  });
});
