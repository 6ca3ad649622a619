/**
 * A tenant on several objects (see vitest.config.ts, "workers-shards"): its projection in 3
 * shards and its line in 2 lines, each line running 2 of the tenant's 4 slots. The API answers
 * as for one object: lists merged with exact totals and cursors, stats summed, idempotency keys
 * honoured, bulk operations over every shard, each line keeping its share and each concurrency key
 * its limit (the feed merged over shards: feed.test.ts).
 */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Job, Stats } from "../../src/schemas";
import { lineName, lineOfJob, projectionName, projectionOfKey, shardOf } from "../../src/tenant/shards";
import { app } from "../../src/app";
import { countingStubs, failingStubs, overlay, resetError, withBindings } from "../faults";
import { DEVELOPMENT_SECRET, mintToken, type Grant } from "../../src/tokens";
import { api, drive, enterJobs, getJob, post, settle, submit } from "../helpers";
import { matchingJobs } from "../../src/tenant/sharded";
import { SHARDS, submitIn } from "./sharded";

const LINES = 2;
const shardStub = (shard: number) => env.PROJECTIONS.getByName(projectionName("default", shard));

/** A submit to a Worker told that the tenant's projection was in one shard before its raise to 3. */
function submitAfterRaise(body: object, headers: Record<string, string>) {
  return app.request(
    "http://localhost/api/v1/runs",
    { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) },
    overlay(env, { PROJECTION_SHARDS_BEFORE: "1" }),
  );
}

type Page = { jobs: Job[]; total: number; next_cursor: string | null };
const list = async (query: string) => {
  const res = await api(`/api/v1/runs?${query}`);
  expect(res.status).toBe(200);
  return res.json<Page>();
};

/** Every job of the session, newest first, as the shards themselves order them. */
async function mergedByShards(session: string): Promise<string[]> {
  const pages = await Promise.all(Array.from({ length: SHARDS }, (_, s) => shardStub(s).list({ session_id: session, page: 1, page_size: 100 })));
  for (const page of pages) expect(page.jobs.length).toBeGreaterThan(0);
  return pages
    .flatMap((p) => p.jobs.map((job, i) => ({ id: job.job_id, seq: p.seqs[i] })))
    .sort((a, b) => b.seq - a.seq)
    .map((r) => r.id);
}

async function walkByCursor(query: string, pageSize: number): Promise<{ ids: string[]; totals: number[] }> {
  const ids: string[] = [];
  const totals: number[] = [];
  let cursor: string | null = null;
  do {
    const page: Page = await list(`${query}&page_size=${pageSize}${cursor ? `&cursor=${cursor}` : ""}`);
    ids.push(...page.jobs.map((j) => j.job_id));
    totals.push(page.total);
    cursor = page.next_cursor;
  } while (cursor);
  return { ids, totals };
}

describe("a tenant's projection in shards", () => {
  it("spreads its jobs over every shard and lists them as one: newest first, exact totals, cursors and pages", async () => {
    const submitted: string[] = [];
    for (let i = 0; i < 40; i++) submitted.push(await submitIn("spread", { tags: [i % 2 === 0 ? "even" : "odd"], metadata: { n: String(i % 4) } }));
    const order = await mergedByShards("spread");
    expect(new Set(order)).toEqual(new Set(submitted));
    // Within each shard, newest first: the reverse of the order they were submitted in.
    for (let shard = 0; shard < SHARDS; shard++) {
      const own = new Set((await shardStub(shard).list({ session_id: "spread", page: 1, page_size: 100 })).jobs.map((j) => j.job_id));
      expect(order.filter((id) => own.has(id))).toEqual([...submitted].reverse().filter((id) => own.has(id)));
    }

    const walked = await walkByCursor("session_id=spread", 7);
    expect(walked.ids).toEqual(order);
    expect(new Set(walked.totals)).toEqual(new Set([40]));
    const paged: string[] = [];
    for (let page = 1; page <= 6; page++) {
      const answer = await list(`session_id=spread&page_size=7&page=${page}`);
      expect(answer.total).toBe(40);
      paged.push(...answer.jobs.map((j) => j.job_id));
    }
    expect(paged).toEqual(order);
    expect((await list("session_id=spread&page_size=7&page=7")).jobs).toEqual([]);

    const even = await walkByCursor("session_id=spread&tag=even", 6);
    expect(even.ids).toEqual(order.filter((id) => submitted.indexOf(id) % 2 === 0));
    expect(new Set(even.totals)).toEqual(new Set([20]));
    const both = await walkByCursor("session_id=spread&tag=even&metadata.n=2", 3);
    expect(both.ids).toEqual(order.filter((id) => submitted.indexOf(id) % 4 === 2));
    expect(new Set(both.totals)).toEqual(new Set([10]));
    expect((await list("session_id=spread&status=running")).total).toBe(0);
  });

  it("gives a next page when one shard alone holds the first page and more", async () => {
    const template = await getJob(await submitIn("one-shard"));
    const own = projectionName("default", shardOf(template.job_id, SHARDS));
    const ids = await enterJobs(template, 3, () => own);
    // That shard alone answers the first page, to the full, and holds more; the others hold none.
    const first = await list("session_id=one-shard&page_size=2");
    expect(first.jobs).toHaveLength(2);
    expect(first.total).toBe(4);
    expect(first.next_cursor).not.toBeNull();
    const walked = await walkByCursor("session_id=one-shard", 2);
    expect(new Set(walked.ids)).toEqual(new Set([template.job_id, ...ids]));
    expect(walked.ids).toHaveLength(4);
  });

  it("refuses offset pages deeper than it reads, and pages on by cursor", async () => {
    const res = await api("/api/v1/runs?page=101&page_size=100");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "page × page_size may be at most 10000 here; page on with cursor" });
    expect((await api("/api/v1/runs?page=100&page_size=100")).status).toBe(200);
  });

  it("keeps an idempotency key with its job, in the key's shard", async () => {
    const key = "sharded-key-1";
    const first = await post("/api/v1/runs", { prompt: "keyed", session_id: "keyed", delay_seconds: 3600 }, { "Idempotency-Key": key });
    const again = await post("/api/v1/runs", { prompt: "keyed", session_id: "keyed", delay_seconds: 3600 }, { "Idempotency-Key": key });
    const id = (await first.json<{ job_id: string }>()).job_id;
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(id);
    const other = await post("/api/v1/runs", { prompt: "another body", session_id: "keyed" }, { "Idempotency-Key": key });
    expect(other.status).toBe(409);
    expect(await env.PROJECTIONS.getByName(projectionOfKey(env, "default", key)).keyHolder(key, null)).toMatchObject({ job_id: id });
    expect((await list("session_id=keyed")).total).toBe(1);
  });

  it("finds a key given before PROJECTION_SHARDS was raised where it was held, with PROJECTION_SHARDS_BEFORE", async () => {
    // A deployment with one projection held every key in the tenant's own object, shard 0, beside
    // its job. Made here as a job with a key of shard 0, its key then renamed to one that is
    // in another shard now, as a raise from 1 to 3 moves it.
    const key = ["raised-1", "raised-2", "raised-3", "raised-4"].find((k) => shardOf(k, SHARDS) !== 0)!;
    const keptKey = ["kept-1", "kept-2", "kept-3", "kept-4", "kept-5", "kept-6"].find((k) => shardOf(k, SHARDS) === 0)!;
    const body = { prompt: "before the raise", session_id: "raised", delay_seconds: 3600 };
    const made = await post("/api/v1/runs", body, { "Idempotency-Key": keptKey });
    const id = (await made.json<{ job_id: string }>()).job_id;
    await runInDurableObject(shardStub(0), (_instance, state) => {
      state.storage.sql.exec("UPDATE idempotency SET key = ? WHERE key = ?", key, keptKey);
    });
    const raised = (sent: object) => submitAfterRaise(sent, { "Idempotency-Key": key });

    const again = await raised(body);
    expect(again.status).toBe(202);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect((await again.json<{ job_id: string }>()).job_id).toBe(id);
    const other = await raised({ ...body, prompt: "another body" });
    expect(other.status).toBe(409);
    expect(await other.json()).toMatchObject({ detail: "Job already exists with this idempotency key", job_id: id });
    expect((await list("session_id=raised")).total).toBe(1);

    // Its job deleted, the key is free: the next submit with it makes a new job, held in its shard now.
    expect((await api(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
    const fresh = await raised(body);
    expect(fresh.status).toBe(202);
    expect(fresh.headers.get("Idempotent-Replayed")).toBeNull();
    const freshId = (await fresh.json<{ job_id: string }>()).job_id;
    expect(freshId).not.toBe(id);
    expect(await env.PROJECTIONS.getByName(projectionOfKey(env, "default", key)).keyHolder(key, null)).toMatchObject({ job_id: freshId });
  });

  it("counts a token's submits from before PROJECTION_SHARDS was raised, with PROJECTION_SHARDS_BEFORE", async () => {
    // A token whose submit counter was in shard 0, the one projection, and is in another shard now.
    const id = ["token-a", "token-b", "token-c", "token-d"].find((t) => shardOf(t, SHARDS) !== 0)!;
    const expires = Math.floor(Date.now() / 1000) + 600;
    const grant: Grant = { id, tenant: "default", key: "", scopes: ["submit"], runs: null, session_id: null, tags: null, expires, max_submits: 3, concurrency_key: null, priority: null, config: null, agent: null, metadata: null };
    const token = await mintToken(grant, DEVELOPMENT_SECRET);
    // Two of its three submits were counted before the raise.
    for (let i = 0; i < 2; i++) expect(await shardStub(0).spendSubmit(id, 3, expires * 1000)).toBe(true);
    const submitWithToken = () => submitAfterRaise({ prompt: "a token's", delay_seconds: 3600 }, { authorization: `Bearer ${token}` });
    // What it has left counts both shards.
    const submitsLeft = async () => {
      const res = await app.request("http://localhost/api/v1/tokens/verify", { headers: { authorization: `Bearer ${token}` } }, overlay(env, { PROJECTION_SHARDS_BEFORE: "1" }));
      return (await res.json<{ submits_left: number }>()).submits_left;
    };
    expect(await submitsLeft()).toBe(1);
    expect((await submitWithToken()).status).toBe(202);
    expect(await submitsLeft()).toBe(0);
    const refused = await submitWithToken();
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ detail: "Token submit limit reached" });
  });

  it("a token's submits cut short, its counter in one shard and their jobs in others: asked a minute on, the one whose job was made and deleted stands, the one that made none is given back", async () => {
    const id = ["token-e", "token-f", "token-g", "token-h"].find((t) => shardOf(t, SHARDS) !== 0)!;
    const counter = env.PROJECTIONS.getByName(projectionOfKey(env, "default", id));
    const expires = Math.floor(Date.now() / 1000) + 600;
    const grant: Grant = { id, tenant: "default", key: "", scopes: ["submit"], runs: null, session_id: null, tags: null, expires, max_submits: 2, concurrency_key: null, priority: null, config: null, agent: null, metadata: null };
    const token = await mintToken(grant, DEVELOPMENT_SECRET);
    // Keys whose jobs live in another shard than the token's counter.
    const keys = Array.from({ length: 20 }, (_, i) => `cut-${crypto.randomUUID()}-${i}`).filter((k) => shardOf(k, SHARDS) !== shardOf(id, SHARDS));
    const submitUnder = (key: string, bindings: Partial<Env>) =>
      app.request(
        "http://localhost/api/v1/runs",
        { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}`, "idempotency-key": key }, body: JSON.stringify({ prompt: "cut", delay_seconds: 3600 }) },
        overlay(env, bindings),
      );
    const made = await submitUnder(keys[0], { PROJECTIONS: failingStubs(env.PROJECTIONS, "submitMade", [1], "before").proxy });
    expect(made.status).toBe(202);
    const { job_id } = await made.json<{ job_id: string }>();
    expect((await api(`/api/v1/runs/${job_id}?force=true`, { method: "DELETE" })).status).toBe(204);
    const none = await submitUnder(keys[1], {
      RUNS: failingStubs(env.RUNS, "create", [1], "before", resetError).proxy,
      PROJECTIONS: failingStubs(env.PROJECTIONS, "refundSubmit", [1], "before").proxy,
    });
    expect(none.status).toBe(503);
    expect(await counter.submitsSpent(id)).toBe(2);

    await runInDurableObject(counter, (_instance, state) => {
      state.storage.sql.exec("UPDATE token_spends SET ask_at = ask_at - 60000");
    });
    expect(await runDurableObjectAlarm(counter)).toBe(true);
    expect(await counter.submitsSpent(id)).toBe(1);
    expect(await runInDurableObject(counter, (_instance, state) => state.storage.sql.exec("SELECT * FROM token_spends").toArray())).toEqual([]);
  });

  it("sums the shards' stats", async () => {
    const before = await (await api("/stats")).json<Stats>();
    for (let i = 0; i < 9; i++) await submitIn("counted");
    const after = await (await api("/stats")).json<Stats>();
    expect(after.total_jobs - before.total_jobs).toBe(9);
    expect(after.by_status.queued - before.by_status.queued).toBe(9);
    const shards = await Promise.all(Array.from({ length: SHARDS }, (_, s) => shardStub(s).stats()));
    expect(shards.reduce((n, s) => n + s.total_jobs, 0)).toBe(after.total_jobs);
    expect(after.usage_by_day).toHaveLength(shards[0].usage_by_day.length);
  });

  it("sums the shards' token usage, in all and for the day", async () => {
    const before = await (await api("/stats")).json<Stats>();
    const jobs: Job[] = [];
    const shards = new Set<number>();
    // Jobs run to their end until every shard has counted one.
    while (shards.size < SHARDS && jobs.length < 30) {
      const id = await submit({ steps: 1, output_bytes: 400 + 40 * jobs.length }, { prompt: "count me", session_id: "usage" });
      jobs.push(await drive(id));
      await settle(id);
      shards.add(shardOf(id, SHARDS));
    }
    expect(shards.size).toBe(SHARDS);
    const after = await (await api("/stats")).json<Stats>();
    const fields = ["prompt_tokens", "completion_tokens", "total_tokens", "model_calls"] as const;
    const used = Object.fromEntries(fields.map((f) => [f, jobs.reduce((n, j) => n + j.usage[f], 0)]));
    const grew = (from: Stats["usage"], to: Stats["usage"]) => Object.fromEntries(fields.map((f) => [f, to[f] - from[f]]));
    expect(used.model_calls).toBe(jobs.length);
    expect(grew(before.usage, after.usage)).toEqual(used);
    const today = (stats: Stats) => stats.usage_by_day.at(-1)!;
    expect(today(after).day).toBe(new Date().toISOString().slice(0, 10));
    expect(grew(today(before), today(after))).toEqual(used);
  });

  it("a bulk operation by metadata matches only the jobs carrying it, in every shard", async () => {
    const mine: string[] = [];
    const spread = () => new Set(mine.map((id) => shardOf(id, SHARDS))).size;
    // One user's job beside two of another's, until the first user's lie in more than one shard.
    for (let i = 0; i < 60 && (mine.length < 4 || spread() < 2); i++) {
      const id = await submitIn("erasure", { metadata: { user: i % 3 === 0 ? "u-erased" : "u-kept" } });
      if (i % 3 === 0) mine.push(id);
    }
    expect(spread()).toBeGreaterThan(1);
    const res = await post("/api/v1/runs/bulk/cancel", { metadata: { user: "u-erased" } });
    expect(res.status).toBe(202);
    expect((await res.json<{ matched: number }>()).matched).toBe(mine.length);
    expect(new Set(await matchingJobs(env, "default", { metadata: { user: "u-erased" } }, 100))).toEqual(new Set(mine));
  });

  it("gathers one match more than asked from the shards, which tells a filter that matches too many", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await submitIn("too-many"));
    const matched = await matchingJobs(env, "default", { session_id: "too-many" }, 4);
    expect(matched).toHaveLength(5);
    for (const id of matched) expect(ids).toContain(id);
  });

  it("deletes a job from its shard, and a bulk cancel reaches every shard", async () => {
    const ids = [];
    for (let i = 0; i < 12; i++) ids.push(await submitIn("bulked"));
    await api(`/api/v1/runs/${ids[0]}/cancel`, { method: "POST" });
    expect((await api(`/api/v1/runs/${ids[0]}`, { method: "DELETE" })).status).toBe(204);
    await settle(ids[0]);
    expect((await list("session_id=bulked")).total).toBe(11);
    const res = await post("/api/v1/runs/bulk/cancel", { session_id: "bulked", status: "queued" });
    expect(res.status).toBe(202);
    expect((await res.json<{ matched: number }>()).matched).toBe(11);
  });
});

describe("what a job costs a sharded tenant", () => {
  it("each job calls only its own shard and its own line, 4 calls in all, and the jobs spread over them", async () => {
    const calls: string[] = [];
    const counting = { PROJECTIONS: countingStubs(env.PROJECTIONS, "projection", calls, true), LINES: countingStubs(env.LINES, "line", calls, true) };
    const shardsUsed = new Set<string>();
    const linesUsed = new Set<string>();
    // Ids are random, and so is where they land: 16 jobs all in one of the 2 lines happens once in
    // 32,768 runs. So, past 16, jobs go on (up to 64) while a line or a second shard is unused.
    let submitted = 0;
    while (submitted < 16 || ((linesUsed.size < LINES || shardsUsed.size < 2) && submitted < 64)) {
      submitted++;
      calls.length = 0;
      const body = JSON.stringify({ prompt: "counted", session_id: "counted-calls", config: { simulate: { steps: 3, step_ms: 1 } } });
      const res = await app.request("http://localhost/api/v1/runs", { method: "POST", headers: { "content-type": "application/json" }, body }, overlay(env, counting));
      expect(res.status).toBe(202);
      const { job_id } = await res.json<{ job_id: string }>();
      await withBindings(job_id, counting);
      expect((await drive(job_id)).status).toBe("succeeded");
      const shard = /^projection:([^.]+)\./.exec(calls.find((c) => c.startsWith("projection:"))!)![1];
      const line = lineOfJob(env, "default", { job_id });
      expect(calls).toEqual([`line:${line}.join`, `projection:${shard}.admit`, `line:${line}.leave`, `projection:${shard}.upsert`]);
      shardsUsed.add(shard);
      linesUsed.add(line);
    }
    expect(shardsUsed.size).toBeGreaterThan(1);
    expect(linesUsed.size).toBe(LINES);
    expect((await list("session_id=counted-calls&status=succeeded")).total).toBe(submitted);
  });
});

describe("a tenant's line in several lines", () => {
  it("runs each line's share of the tenant's slots, a concurrency key within its limit in one line", async () => {
    const keyed = [];
    for (let i = 0; i < 3; i++) keyed.push(await submitIn("keyed-line", { delay_seconds: undefined, concurrency_key: "k1" }));
    const keyLine = lineOfJob(env, "default", { job_id: keyed[0], concurrency_key: "k1" });
    const keyedJobs = await Promise.all(keyed.map(getJob));
    expect(keyedJobs.map((j) => j.status)).toEqual(["running", "queued", "queued"]);
    expect(keyedJobs[1].queue_position).toBeGreaterThan(0);
    expect(keyedJobs[2].queue_position).toBeGreaterThan(keyedJobs[1].queue_position!);

    // Jobs without a key, until each line holds at least three of them.
    const free: string[] = [];
    const perLine = () => Array.from({ length: LINES }, (_, l) => free.filter((id) => lineOfJob(env, "default", { job_id: id }) === lineName("default", l)).length);
    while (perLine().some((n) => n < 3) && free.length < 40) free.push(await submitIn("free-line", { delay_seconds: undefined }));
    const jobs = await Promise.all([...keyed, ...free].map(getJob));
    const running = new Map<string, number>();
    for (const job of jobs) {
      const line = lineOfJob(env, "default", job);
      if (job.status === "running") running.set(line, (running.get(line) ?? 0) + 1);
    }
    for (let l = 0; l < LINES; l++) {
      const name = lineName("default", l);
      expect(running.get(name) ?? 0).toBe(2);
      expect((await env.LINES.getByName(name).counts()).running).toBe(2);
    }
    // Every waiting job has its place in its own line.
    for (const job of jobs.filter((j) => j.status === "queued")) expect(job.queue_position).toBeGreaterThan(0);

    // The running keyed job ends: the next keyed one starts in the key's line.
    await api(`/api/v1/runs/${keyed[0]}/cancel`, { method: "POST" });
    await settle(keyed[0]);
    await runDurableObjectAlarm(env.LINES.getByName(keyLine));
    expect((await getJob(keyed[1])).status).toBe("running");
    expect((await getJob(keyed[2])).status).toBe("queued");
  });
});
