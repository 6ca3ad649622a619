/** The list by tags and metadata: exact totals and cursors under every filter, kept as jobs change and go. */
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { RunList } from "../src/schemas";
import { api, drive, finished, post, settle, submit, submitQueued } from "./helpers";

async function list(query: string): Promise<RunList> {
  const res = await api(`/api/v1/runs?${query}`);
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json();
}

/** Every job of a filter, page by page with the cursor. */
async function walk(query: string, pageSize = 3): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const page: RunList = await list(`${query}&page_size=${pageSize}${cursor ? `&cursor=${cursor}` : ""}`);
    ids.push(...page.jobs.map((j) => j.job_id));
    cursor = page.next_cursor;
  } while (cursor !== null);
  return ids;
}

describe("list by tag and metadata", () => {
  it("tag= (every one given) and metadata.<key>= (exact), alone and with status and session: exact totals, whole walks", async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const red = `red-${run}`;
    const big = `big-${run}`;
    const jobs: { id: string; tags: string[]; owner: string; session: string; done: boolean }[] = [];
    for (let i = 0; i < 14; i++) {
      const tags = [i % 2 === 0 ? red : `blue-${run}`, ...(i % 3 === 0 ? [big] : [])];
      const owner = i % 4 === 0 ? "ann" : "bob";
      const session = `${run}-${i % 2}`;
      const id = await submit({ steps: 1 }, { tags, metadata: { owner, run }, session_id: session, delay_seconds: 3600 });
      jobs.push({ id, tags, owner, session, done: false });
    }
    // Some are cancelled: the filters follow the status they reach.
    for (const job of jobs.slice(0, 14).filter((_, i) => i % 5 === 0)) {
      await api(`/api/v1/runs/${job.id}/cancel`, { method: "POST" });
      // The projection hears of it from the job's outbox.
      await settle(job.id);
      job.done = true;
    }
    const newestFirst = [...jobs].reverse();
    const cases: [string, (j: (typeof jobs)[number]) => boolean][] = [
      [`tag=${red}`, (j) => j.tags.includes(red)],
      [`tag=${red}&tag=${big}`, (j) => j.tags.includes(red) && j.tags.includes(big)],
      [`tag=${big}&tag=${red}&tag=${big}`, (j) => j.tags.includes(red) && j.tags.includes(big)],
      [`metadata.run=${run}`, () => true],
      [`metadata.run=${run}&metadata.owner=ann`, (j) => j.owner === "ann"],
      [`metadata.run=${run}&tag=${big}&metadata.owner=bob`, (j) => j.owner === "bob" && j.tags.includes(big)],
      [`tag=${red}&status=cancelled`, (j) => j.tags.includes(red) && j.done],
      [`tag=${red}&status=queued`, (j) => j.tags.includes(red) && !j.done],
      [`tag=${big}&session_id=${run}-0`, (j) => j.tags.includes(big) && j.session === `${run}-0`],
      [`tag=${big}&session_id=${run}-0&status=queued`, (j) => j.tags.includes(big) && j.session === `${run}-0` && !j.done],
      [`tag=${red}&tag=${big}&session_id=${run}-0&status=cancelled`, (j) => j.tags.includes(red) && j.tags.includes(big) && j.session === `${run}-0` && j.done],
      [`tag=${red}&metadata.run=nothing`, () => false],
      [`tag=never-${run}`, () => false],
    ];
    for (const [query, wanted] of cases) {
      const expected = newestFirst.filter(wanted).map((j) => j.id);
      expect((await list(query)).total, query).toBe(expected.length);
      expect(await walk(query), query).toEqual(expected);
      // Page numbers agree with the cursor.
      const second = await list(`${query}&page=2&page_size=2`);
      expect(second.jobs.map((j) => j.job_id), query).toEqual(expected.slice(2, 4));
    }
    for (const job of jobs) await api(`/api/v1/runs/${job.id}?force=true`, { method: "DELETE" });
    expect((await list(`metadata.run=${run}`)).total).toBe(0);
    expect((await list(`tag=${red}`)).total).toBe(0);
  });

  it("metadata values and keys are matched exactly, whatever characters they hold", async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const odd = { [`k=${run}`]: "v=w", [`emoji-${run}`]: "café ☕ \"quoted\"", [`plain-${run}`]: "a,b&c" };
    const id = await submit({ steps: 1 }, { metadata: odd });
    for (const [key, value] of Object.entries(odd)) {
      const query = `metadata.${encodeURIComponent(key)}=${encodeURIComponent(value)}`;
      expect((await list(query)).jobs.map((j) => j.job_id), key).toEqual([id]);
      expect((await list(`metadata.${encodeURIComponent(key)}=${encodeURIComponent(`${value}x`)}`)).total).toBe(0);
    }
    // "k=<run>" = "v=w" is not "k" = "<run>=v=w".
    expect((await list(`metadata.k=${encodeURIComponent(`${run}=v=w`)}`)).total).toBe(0);
  });

  it("keys that name an object's own properties (constructor, toString, __proto__) are keys like any other", async () => {
    const value = crypto.randomUUID().slice(0, 8);
    const id = await submit({ steps: 1 }, { metadata: { constructor: value, toString: value } });
    for (const key of ["constructor", "toString"]) {
      expect((await list(`metadata.${key}=${value}`)).jobs.map((j) => j.job_id), key).toEqual([id]);
      expect((await list(`metadata.${key}=${value}&metadata.${key}=${value}`)).total, key).toBe(1);
    }
    // No job holds that key: none is listed, not every job.
    expect((await list(`metadata.__proto__=${value}`)).total).toBe(0);
    const twice = await api(`/api/v1/runs?metadata.constructor=${value}&metadata.constructor=other`);
    expect(twice.status).toBe(422);
    expect(await twice.json()).toEqual({ detail: [{ loc: ["query", "metadata.constructor"], msg: "give each metadata key once", type: "value_error" }] });
  });

  it("a job's status change moves it between the filtered totals", async () => {
    const tag = `moving-${crypto.randomUUID().slice(0, 8)}`;
    const id = await submit({ steps: 1 }, { tags: [tag] });
    expect((await list(`tag=${tag}&status=running`)).total).toBe(1);
    await drive(id);
    expect((await list(`tag=${tag}&status=running`)).total).toBe(0);
    expect((await list(`tag=${tag}&status=succeeded`)).total).toBe(1);
    expect((await list(`tag=${tag}`)).total).toBe(1);
  });

  it("a filter at each of its limits is taken, and finds the job submitted at the same limits", async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const session = `${run}-`.padEnd(256, "s");
    const tags = Array.from({ length: 10 }, (_, i) => `edge${i}-${run}`);
    const key = `${run}-`.padEnd(64, "k");
    const value = "v".repeat(512);
    const id = await submit({ steps: 1 }, { session_id: session, tags, metadata: { [key]: value }, delay_seconds: 3600 });
    const query = [`session_id=${session}`, ...tags.map((t) => `tag=${t}`), `metadata.${key}=${value}`].join("&");
    expect((await list(query)).jobs.map((j) => j.job_id)).toEqual([id]);
  });

  it.each([
    ["a malformed tag", "tag=has%20space", ["query", "tag"]],
    ["an empty tag", "tag=", ["query", "tag"]],
    ["more than 10 tags", Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join("&"), ["query", "tag"]],
    ["more than 5 metadata filters", Array.from({ length: 6 }, (_, i) => `metadata.k${i}=v`).join("&"), ["query", "metadata.k5"]],
    ["a metadata key over 64 characters", `metadata.${"k".repeat(65)}=v`, ["query", `metadata.${"k".repeat(65)}`]],
    ["an empty metadata key", "metadata.=v", ["query", "metadata."]],
    ["a metadata value over 512 characters", `metadata.k=${"v".repeat(513)}`, ["query", "metadata.k"]],
    ["one metadata key with two values", "metadata.k=a&metadata.k=b", ["query", "metadata.k"]],
  ])("%s → 422 naming it", async (_what, query, loc) => {
    const res = await api(`/api/v1/runs?${query}`);
    expect(res.status).toBe(422);
    const { detail } = await res.json<{ detail: { loc: string[]; msg: string }[] }>();
    expect(detail[0].loc).toEqual(loc);
    expect(detail[0].msg.length).toBeGreaterThan(0);
  });
});

describe("the tallies behind the totals", () => {
  /** The projection's tally rows of one session and its labels. */
  const talliesOf = (session: string, labels: string[]) =>
    runInDurableObject(env.PROJECTIONS.getByName("default"), (_instance, state) => {
      const sql = state.storage.sql;
      const among = labels.map(() => "?").join(", ");
      return {
        session: sql.exec("SELECT status, n FROM session_counts WHERE session_id = ? ORDER BY status", session).toArray(),
        labels: sql.exec(`SELECT label, status, n FROM label_counts WHERE label IN (${among}) ORDER BY label, status`, ...labels).toArray(),
        labelsInSession: sql.exec("SELECT label, status, n FROM label_session_counts WHERE session_id = ? ORDER BY label, status", session).toArray(),
      };
    });

  it("a session and labels used once leave no row behind: none at 0 as jobs move, none once they are gone", async () => {
    const mark = crypto.randomUUID().slice(0, 8);
    const session = `once-${mark}`;
    const labels = [`m:${JSON.stringify(["once", mark])}`, `t:once-${mark}`];
    const extra = { session_id: session, tags: [`once-${mark}`], metadata: { once: mark } };
    const done = await finished({ steps: 1 }, extra);
    const cancelled = await submitQueued({ steps: 1 }, extra);
    expect((await post(`/api/v1/runs/${cancelled}/cancel`, {})).status).toBe(200);
    await settle(cancelled);

    // Each job was queued, and one running, on its way: no tally of those is left at 0.
    const ended = [
      { status: "cancelled", n: 1 },
      { status: "succeeded", n: 1 },
    ];
    const byLabel = labels.flatMap((label) => ended.map((e) => ({ label, ...e })));
    expect(await talliesOf(session, labels)).toEqual({ session: ended, labels: byLabel, labelsInSession: byLabel });

    for (const id of [done, cancelled]) {
      expect((await api(`/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
      await settle(id);
    }
    expect(await talliesOf(session, labels)).toEqual({ session: [], labels: [], labelsInSession: [] });
    expect((await list(`tag=once-${mark}`)).total).toBe(0);
    expect((await list(`session_id=${session}&metadata.once=${mark}`)).total).toBe(0);
  });
});
