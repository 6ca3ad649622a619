/**
 * The tenant's live feed, GET /api/v1/runs/events. This project keeps a short change log
 * (FEED_KEEP_CHANGES=20, so at most 200 changes), so that a watcher can fall behind it.
 */
import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Job } from "../src/schemas";
import { ChangeLog } from "../src/tenant/changeLog";
import { MAX_BEHIND } from "../src/tenant/feed";
import { api, drive, driveTo, enterJobs, getJob, parseSse, post, runStub, submit, type ParsedEvent } from "./helpers";

/** A watcher of the feed: the events it has been sent so far, and a way to wait for more. */
class Watcher {
  readonly events: ParsedEvent[] = [];
  text = "";
  private readonly reader: ReadableStreamDefaultReader<string>;
  private pending: Promise<ReadableStreamReadResult<string>> | null = null;

  constructor(readonly response: Response) {
    this.reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  }

  static async open(query = "", lastEventId?: number): Promise<Watcher> {
    const res = await api(`/api/v1/runs/events${query}`, lastEventId === undefined ? undefined : { headers: { "Last-Event-ID": String(lastEventId) } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    return new Watcher(res);
  }

  /** Reads until `done` holds of the events so far, or `ms` pass (then it fails, naming `what`). */
  async until(done: (events: ParsedEvent[]) => boolean, what: string, ms = 5000): Promise<ParsedEvent[]> {
    const deadline = Date.now() + ms;
    while (!done(this.events)) {
      const read = await this.read(deadline);
      if (read === "waiting") throw new Error(`the watcher did not see ${what}; it saw ${JSON.stringify(this.events.map((e) => [e.id, e.event]))}`);
      if (read === "ended") throw new Error(`the feed ended before ${what}`);
    }
    return this.events;
  }

  /** Reads until the feed ends, which it must within `ms`: every event it was sent. */
  async toEnd(ms = 5000): Promise<ParsedEvent[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const read = await this.read(deadline);
      if (read === "waiting") throw new Error(`the feed did not end; it sent ${this.events.length} events`);
      if (read === "ended") return this.events;
    }
  }

  /** One read, its events added; "waiting" once the deadline passes with nothing read. */
  private async read(deadline: number): Promise<"read" | "ended" | "waiting"> {
    const left = deadline - Date.now();
    if (left <= 0) return "waiting";
    this.pending ??= this.reader.read();
    let timer = 0;
    const read = await Promise.race([this.pending, new Promise<null>((r) => (timer = setTimeout(() => r(null), left)))]);
    clearTimeout(timer);
    if (read === null) return "waiting";
    this.pending = null;
    if (read.done) return "ended";
    this.text += read.value;
    const end = this.text.lastIndexOf("\n\n");
    if (end >= 0) {
      this.events.push(...parseSse(this.text.slice(0, end + 2)));
      this.raw += this.text.slice(0, end + 2);
      this.text = this.text.slice(end + 2);
    }
    return "read";
  }

  /** Everything read so far, comments included. */
  raw = "";

  async close(): Promise<void> {
    await this.reader.cancel();
  }
}

const jobOf = (event: ParsedEvent) => (event.event === "deleted" ? (JSON.parse(event.data) as { job_id: string }) : (JSON.parse(event.data) as Job));
const about = (id: string) => (events: ParsedEvent[]) => events.filter((e) => jobOf(e).job_id === id);
const deletedEvent = (id: string) => (events: ParsedEvent[]) => events.some((e) => e.event === "deleted" && jobOf(e).job_id === id);

async function remove(id: string): Promise<void> {
  expect((await api(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
}

/** A job of a new session run to its end and deleted: every change of it, as a live watcher was told them. */
async function oneJobsChanges(): Promise<{ session: string; all: ParsedEvent[] }> {
  const session = `feed-${crypto.randomUUID()}`;
  const live = await Watcher.open(`?session_id=${session}`);
  const id = await submit({ steps: 2 }, { session_id: session });
  await drive(id);
  await remove(id);
  const all = await live.until(deletedEvent(id), "the deletion");
  await live.close();
  return { session, all };
}

describe("the live feed", () => {
  it("tells submit, start, input, end and delete of the matching jobs only, and goes on after a deletion", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const watcher = await Watcher.open(`?session_id=${session}`);
    const other = await submit({ steps: 1 }, { session_id: `${session}-other` });
    const id = await submit({ steps: 2, input_at_step: 1 }, { session_id: session, delay_seconds: 3600 });
    await watcher.until((events) => about(id)(events).length >= 1, "the submit");
    await drive(other);

    // A delayed job is told as queued, and its deletion.
    await remove(id);
    await watcher.until(deletedEvent(id), "the deletion");
    const second = await submit({ steps: 2, input_at_step: 1 }, { session_id: session });
    await driveTo(second, "awaiting_input");
    expect((await post(`/api/v1/runs/${second}/input`, { action: "approve" })).status).toBe(200);
    await drive(second);
    await remove(second);
    const events = await watcher.until(deletedEvent(second), "the second job's deletion");

    expect(about(id)(events).map((e) => (e.event === "deleted" ? "deleted" : (jobOf(e) as Job).status))).toEqual(["queued", "deleted"]);
    const statuses = about(second)(events).map((e) => (e.event === "deleted" ? "deleted" : (jobOf(e) as Job).status));
    expect(statuses[0]).toBe("running");
    expect(statuses).toContain("awaiting_input");
    expect(statuses.slice(-2)).toEqual(["succeeded", "deleted"]);
    // Nothing of the other session's job; ids rise.
    expect(events.some((e) => jobOf(e).job_id === other)).toBe(false);
    const ids = events.map((e) => e.id!);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    await watcher.close();
  });

  it("tells progress at most once a second per job, and every status change", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const watcher = await Watcher.open(`?session_id=${session}`);
    const id = await submit({ steps: 4 }, { session_id: session });
    // Three steps at once: their progress falls within a second of the start and is not told.
    for (let i = 0; i < 3; i++) await runDurableObjectAlarm(runStub(id));
    // The last a second later: told, then the end.
    await new Promise((r) => setTimeout(r, 1100));
    await drive(id);
    const events = await watcher.until((e) => about(id)(e).some((x) => (jobOf(x) as Job).status === "succeeded"), "the end");
    const told = about(id)(events).map((e) => jobOf(e) as Job);
    expect(told[0].status).toBe("running");
    expect(told.at(-1)!.status).toBe("succeeded");
    const progressOnly = told.filter((job, i) => i > 0 && job.status === told[i - 1].status);
    expect(progressOnly.length).toBeLessThanOrEqual(1);
    expect(told.length).toBeLessThanOrEqual(3);
    await watcher.close();
  });

  it("a status filter tells a job's changes into the status and out of it", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    // Given more than once, the status is read by its last value, as a list reads it.
    const watcher = await Watcher.open(`?status=succeeded&status=running&session_id=${session}`);
    const id = await submit({ steps: 1 }, { session_id: session });
    await drive(id);
    const events = await watcher.until((e) => about(id)(e).length >= 2, "the job leaving running");
    expect(about(id)(events).map((e) => (jobOf(e) as Job).status)).toEqual(["running", "succeeded"]);
    await watcher.close();
  });

  it("an empty status is not given, as for a list: every change of the session is told", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const watcher = await Watcher.open(`?status=&session_id=${session}`);
    const id = await submit({ steps: 1 }, { session_id: session });
    await drive(id);
    const events = await watcher.until((e) => about(id)(e).length >= 2, "the job's end");
    expect(about(id)(events).map((e) => (jobOf(e) as Job).status)).toEqual(["running", "succeeded"]);
    await watcher.close();
  });

  it("HEAD answers the feed's headers and leaves no watcher in the projection", async () => {
    const watchers = () =>
      runInDurableObject(env.PROJECTIONS.getByName("default"), (instance) => (instance as unknown as { feed: { size: number } }).feed.size);
    const before = await watchers();
    for (let i = 0; i < 3; i++) {
      const res = await api("/api/v1/runs/events?status=running", { method: "HEAD" });
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Type")).toBe("text/event-stream; charset=utf-8");
      expect(await res.text()).toBe("");
    }
    // At most as many as before: an earlier test's watcher may still be closing, none is added.
    expect(await watchers()).toBeLessThanOrEqual(before);
    expect((await api("/api/v1/runs/events?status=bogus", { method: "HEAD" })).status).toBe(400);
  });

  it("filters by tag and metadata as the list does", async () => {
    const watcher = await Watcher.open("?tag=blue&tag=big&metadata.owner=ann");
    const wanted = await submit({ steps: 1 }, { tags: ["blue", "big"], metadata: { owner: "ann" } });
    const unwanted = [
      await submit({ steps: 1 }, { tags: ["blue"], metadata: { owner: "ann" } }),
      await submit({ steps: 1 }, { tags: ["blue", "big"], metadata: { owner: "bob" } }),
    ];
    await remove(wanted);
    const events = await watcher.until(deletedEvent(wanted), "the deletion");
    expect(events.every((e) => jobOf(e).job_id === wanted)).toBe(true);
    for (const id of unwanted) await remove(id);
    await watcher.close();
  });

  it("resumes with Last-Event-ID from every position with exactly the changes after it", async () => {
    const { session, all } = await oneJobsChanges();
    const first = all[0].id!;
    const last = all.at(-1)!.id!;
    for (let position = first - 1; position < last; position++) {
      const resumed = await Watcher.open(`?session_id=${session}`, position);
      const events = await resumed.until((e) => e.some((x) => x.id === last), `the changes after ${position}`);
      expect(events.map((e) => [e.id, e.event, e.data])).toEqual(all.filter((e) => e.id! > position).map((e) => [e.id, e.event, e.data]));
      await resumed.close();
    }
    // From the last position: nothing old, the next change.
    const caughtUp = await Watcher.open(`?session_id=${session}`, last);
    const next = await submit({ steps: 1 }, { session_id: session });
    const events = await caughtUp.until((e) => e.length > 0, "the next change");
    expect(jobOf(events[0]).job_id).toBe(next);
    await caughtUp.close();
  });

  it("resumes with ?after= too (an EventSource cannot send headers); the Last-Event-ID of its reconnection wins", async () => {
    const { session, all } = await oneJobsChanges();
    const [first, second, last] = [all[0].id!, all[1].id!, all.at(-1)!.id!];
    const changesAfter = (position: number) => all.filter((e) => e.id! > position).map((e) => [e.id, e.data]);
    const resumed = await Watcher.open(`?session_id=${session}&after=${first}`);
    expect((await resumed.until((e) => e.some((x) => x.id === last), "the end")).map((e) => [e.id, e.data])).toEqual(changesAfter(first));
    await resumed.close();
    // Reconnecting to the same address, EventSource sends the last id it had: the stream goes on from there.
    const reconnected = await Watcher.open(`?session_id=${session}&after=${first}`, second);
    expect((await reconnected.until((e) => e.some((x) => x.id === last), "the end")).map((e) => [e.id, e.data])).toEqual(changesAfter(second));
    await reconnected.close();
  });

  it("50 watchers are each told every change", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const watchers = await Promise.all(Array.from({ length: 50 }, () => Watcher.open(`?session_id=${session}`)));
    const id = await submit({ steps: 2 }, { session_id: session });
    await drive(id);
    await remove(id);
    const seen = await Promise.all(watchers.map((w) => w.until(deletedEvent(id), "the deletion")));
    const expected = seen[0].map((e) => [e.id, e.event]);
    expect(expected.length).toBeGreaterThanOrEqual(3);
    for (const events of seen) expect(events.map((e) => [e.id, e.event])).toEqual(expected);
    await Promise.all(watchers.map((w) => w.close()));
  });

  it("a watcher whose client went away is let go by the heartbeats, and is written to no more; one still there stays", async () => {
    // The runtime does not tell the projection that a Worker cancelled the stream it was reading;
    // the heartbeats find such a stream holding what it was sent. They are driven here by hand.
    const feed = (instance: unknown) => (instance as { feed: { size: number; watchers: { beat(): void } } }).feed;
    const projection = env.PROJECTIONS.getByName("default");
    const watchers = () => runInDurableObject(projection, (instance) => feed(instance).size);
    const beat = async () => {
      await new Promise((r) => setTimeout(r, 50));
      await runInDurableObject(projection, (instance) => feed(instance).watchers.beat());
    };
    // Earlier tests' watchers, closed, go too: the runtime takes a first ping from each, then it
    // holds the next unread.
    for (let i = 0; i < 4; i++) await beat();
    const before = await watchers();
    const session = `feed-${crypto.randomUUID()}`;
    const staying = await Watcher.open(`?session_id=${session}`);
    const leaving = await Watcher.open(`?session_id=${session}`);
    const first = await submit({ steps: 1 }, { session_id: session, delay_seconds: 3600 });
    await staying.until((e) => about(first)(e).length > 0, "the first submit");
    await leaving.until((e) => about(first)(e).length > 0, "the first submit");
    await leaving.close();

    const second = await submit({ steps: 1 }, { session_id: session, delay_seconds: 3600 });
    await staying.until((e) => about(second)(e).length > 0, "the second submit");
    for (let i = 0; i < 4; i++) await beat();
    expect(await watchers()).toBe(before + 1);

    const third = await submit({ steps: 1 }, { session_id: session, delay_seconds: 3600 });
    const events = await staying.until((e) => about(third)(e).length > 0, "the third submit");
    expect(events.filter((e) => e.event === "run").map((e) => jobOf(e).job_id)).toEqual([first, second, third]);
    expect(staying.raw).toContain(": ping");
    await staying.close();
  });

  it("a position older than the log keeps starts with reset, then goes on live", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const live = await Watcher.open(`?session_id=${session}`);
    const first = await submit({ steps: 1 }, { session_id: session, delay_seconds: 3600 });
    const [told] = await live.until((e) => e.length > 0, "the first submit");
    await live.close();
    // More than 10 × FEED_KEEP_CHANGES newer changes: the oldest are pruned, the first among them.
    for (let i = 0; i < 11; i++) await Promise.all(Array.from({ length: 20 }, () => submit({ steps: 1 }, { delay_seconds: 3600 })));
    const behind = await Watcher.open(`?session_id=${session}`, told.id! - 1);
    const [reset] = await behind.until((e) => e.length > 0, "the reset");
    expect(reset.event).toBe("reset");
    const next = await submit({ steps: 1 }, { session_id: session });
    const events = await behind.until((e) => e.length > 1, "the next change");
    expect(jobOf(events[1]).job_id).toBe(next);
    expect(events.some((e) => e.event === "run" && jobOf(e).job_id === first)).toBe(false);
    await behind.close();
    // A position the log still holds resumes without a reset.
    const recent = await Watcher.open(`?session_id=${session}`, events[1].id! - 1);
    expect((await recent.until((e) => e.length > 0, "the kept change"))[0].event).toBe("run");
    await recent.close();
  }, 30_000);

  it("numbers each change one past the newest, after a restart and when pruning has left only the newest", async () => {
    // The log is pruned at every 16th change; with the least it may keep (1) and every change a
    // day old, the 48th change prunes all the 47 before it.
    const stub = env.PROJECTIONS.getByName(`feed-numbers-${crypto.randomUUID()}`);
    const appended = await runInDurableObject(stub, (_instance, state) => {
      const log = new ChangeLog(state.storage, 1);
      const ids = Array.from({ length: 47 }, (_, i) => log.append("run", null, `{"n":${i}}`).id);
      state.storage.sql.exec("UPDATE changes SET at = 0");
      ids.push(log.append("run", null, "{}").id);
      return { ids, kept: state.storage.sql.exec<{ id: number }>("SELECT id FROM changes").toArray().map((r) => r.id), pruned: log.prunedThrough() };
    });
    expect(appended.ids).toEqual(Array.from({ length: 48 }, (_, i) => i + 1));
    expect(appended.kept).toEqual([48]);
    expect(appended.pruned).toBe(47);
    await abortAllDurableObjects();
    const after = await runInDurableObject(env.PROJECTIONS.get(stub.id), (_instance, state) => {
      const log = new ChangeLog(state.storage, 1);
      return { next: log.append("run", null, "{}").id, head: log.head() };
    });
    expect(after).toEqual({ next: 49, head: 49 });
  });

  it("a position ahead of the log's newest change (one it never gave) starts with reset, then goes on live", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const ahead = await Watcher.open(`?session_id=${session}`, 10 ** 12);
    const [reset] = await ahead.until((e) => e.length > 0, "the reset");
    expect(reset.event).toBe("reset");
    const next = await submit({ steps: 1 }, { session_id: session });
    const events = await ahead.until((e) => e.length > 1, "the next change");
    expect(jobOf(events[1]).job_id).toBe(next);
    // Resumed from the reset's own id, nothing is missed and there is no second reset.
    expect(events[1].id).toBeGreaterThan(reset.id!);
    await ahead.close();
  });

  it("lets a watcher more than 5,000 events behind go, to resume with Last-Event-ID; one that keeps up stays", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const keepingUp = await Watcher.open(`?session_id=${session}`);
    // Not read until the changes are made: everything it is sent waits in its connection.
    const behind = await Watcher.open(`?session_id=${session}`);
    const template = await getJob(await submit({ steps: 1 }, { session_id: session, delay_seconds: 3600 }));
    const count = MAX_BEHIND + 100;
    const seen = keepingUp.until((e) => e.length === 1 + count, "every change", 60_000);
    const ids = await enterJobs(template, count);
    const all = await seen;
    expect(new Set(all.slice(1).map((e) => jobOf(e).job_id))).toEqual(new Set(ids));

    // The watcher that fell behind was sent the changes up to its limit, then let go.
    const told = await behind.toEnd();
    expect(told.length).toBeGreaterThan(MAX_BEHIND);
    expect(told.length).toBeLessThan(all.length);
    expect(told.map((e) => e.id)).toEqual(all.slice(0, told.length).map((e) => e.id));
    // It resumes from its last event with exactly the changes after it, then goes on live.
    const resumed = await Watcher.open(`?session_id=${session}`, told.at(-1)!.id!);
    const rest = await resumed.until((e) => e.length === all.length - told.length, "the changes after its last");
    expect(rest.map((e) => e.id)).toEqual(all.slice(told.length).map((e) => e.id));
    const next = await submit({ steps: 1 }, { session_id: session, delay_seconds: 3600 });
    for (const watcher of [resumed, keepingUp]) {
      expect(jobOf((await watcher.until((e) => about(next)(e).length > 0, "the next submit")).at(-1)!).job_id).toBe(next);
      await watcher.close();
    }
  }, 90_000);

  it("sends `: ping` every 15 s", async () => {
    const watcher = await Watcher.open(`?session_id=ping-${crypto.randomUUID()}`);
    await expect(watcher.until(() => watcher.raw.includes(": ping") || watcher.text.includes(": ping"), "a ping", 17_000)).resolves.toBeDefined();
    await watcher.close();
  }, 20_000);

  it.each([
    ["a Last-Event-ID that is no number", "", { "Last-Event-ID": "abc" }, 400, /^Invalid event id: abc$/],
    ["an ?after= that is no number", "?after=abc", {}, 400, /^Invalid event id: abc$/],
    ["an unknown status", "?status=bogus", {}, 400, /^Invalid status: bogus\. Valid values:/],
    ["a malformed tag", "?tag=a%20b", {}, 422, null],
    ["more than 5 metadata filters", `?${[1, 2, 3, 4, 5, 6].map((i) => `metadata.k${i}=v`).join("&")}`, {}, 422, null],
  ])("%s → %s", async (_what, query, headers, status, detail) => {
    const res = await api(`/api/v1/runs/events${query}`, { headers });
    expect(res.status).toBe(status);
    const body = await res.json<{ detail: unknown }>();
    if (detail) expect(body.detail).toMatch(detail);
    else expect(Array.isArray(body.detail)).toBe(true);
  });
});
