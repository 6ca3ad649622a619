/** Scoped tokens: each scope on each route, and each kind of reach, on one job and in lists. */
import { describe, expect, it } from "vitest";
import { SCOPES } from "../../src/schemas";
import { api, readUntilQuiet } from "../helpers";
import { ALPHA, BETA, bearer, call, finishedJob, JOB_ROUTES, JSON_TYPE, mint, type Minted } from "./helpers";

describe("scopes × routes × reach", () => {
  it.each(JOB_ROUTES)("%s <job>%s needs %s: every other scope is refused with 403", async (...route) => {
    const id = await finishedJob();
    for (const scope of SCOPES) {
      const { token } = await mint({ scopes: [scope], runs: [id] });
      const res = await call(id, route, token);
      const body = await res.text();
      if (scope === route[2]) {
        expect([403, 404], `${scope}: ${body}`).not.toContain(res.status);
      } else {
        expect(res.status, `${scope} on ${route[0]} ${route[1]}`).toBe(403);
        expect(JSON.parse(body)).toEqual({ detail: `Token does not allow ${route[2]}` });
      }
    }
  });

  const reaches: [string, boolean, (id: string) => Record<string, unknown>][] = [
    ["its id", true, (id) => ({ runs: [id] })],
    ["another id", false, () => ({ runs: ["run_other"] })],
    ["its session", true, () => ({ session_id: "s1" })],
    ["another session", false, () => ({ session_id: "s2" })],
    ["one of its tags", true, () => ({ tags: ["t2"] })],
    ["all of its tags", true, () => ({ tags: ["t1", "t2"] })],
    ["a tag it lacks", false, () => ({ tags: ["t1", "t3"] })],
    ["its id and session", true, (id) => ({ runs: [id], session_id: "s1" })],
    ["its id and another session", false, (id) => ({ runs: [id], session_id: "s2" })],
    ["its session and another tag", false, () => ({ session_id: "s1", tags: ["t9"] })],
  ];

  it.each(reaches)("a token reaching %s: reached %s", async (_what, reached, reach) => {
    // Only the delete, the last route, changes the job: one job serves every route.
    expect(JOB_ROUTES.at(-1)![0]).toBe("DELETE");
    const id = await finishedJob();
    for (const route of JOB_ROUTES) {
      const { token } = await mint({ scopes: [route[2]], ...reach(id) });
      const res = await call(id, route, token);
      const body = await res.text();
      if (reached) {
        expect(res.status, `${route[0]} ${route[1]}: ${body}`).not.toBe(404);
      } else {
        // Exactly as an unknown id is answered, and nothing was done to the job.
        expect(res.status, `${route[0]} ${route[1]}`).toBe(404);
        expect(JSON.parse(body)).toEqual({ detail: `Job not found: ${id}` });
        expect((await api(`/api/v1/runs/${id}`, { headers: ALPHA })).status).toBe(200);
      }
    }
  });

  it("another tenant's job is unknown to a token even with its id in the reach", async () => {
    const id = await finishedJob();
    const res = await api("/api/v1/tokens", { method: "POST", headers: { ...JSON_TYPE, ...BETA }, body: JSON.stringify({ scopes: [...SCOPES], runs: [id] }) });
    const { token } = await res.json<Minted>();
    for (const route of JOB_ROUTES) expect((await call(id, route, token)).status).toBe(404);
  });

  it("stats and bulk operations need a key", async () => {
    const { token } = await mint({ scopes: [...SCOPES], session_id: "s1" });
    const stats = await api("/stats", { headers: bearer(token) });
    expect(stats.status).toBe(403);
    expect(await stats.json()).toEqual({ detail: "Token does not allow stats" });
    const bulk = await api("/api/v1/runs/bulk/cancel", { method: "POST", headers: { ...JSON_TYPE, ...bearer(token) }, body: JSON.stringify({ session_id: "s1" }) });
    expect(bulk.status).toBe(403);
    expect(await bulk.json()).toEqual({ detail: "Token does not allow bulk operations" });
  });
});

describe("listing with a token", () => {
  it("lists just the token's session and tags, with exact totals and cursors", async () => {
    const session = `list-${crypto.randomUUID()}`;
    const tagged: string[] = [];
    for (let i = 0; i < 5; i++) tagged.push(await finishedJob({ session_id: session, tags: i % 2 === 0 ? ["even"] : ["odd"] }));
    await finishedJob({ session_id: `${session}-other`, tags: ["even"] });
    const { token } = await mint({ scopes: ["read"], session_id: session });
    const all = await (await api("/api/v1/runs?page_size=2", { headers: bearer(token) })).json<{ total: number; jobs: { job_id: string }[]; next_cursor: string }>();
    expect(all.total).toBe(5);
    const next = await (await api(`/api/v1/runs?page_size=2&cursor=${all.next_cursor}`, { headers: bearer(token) })).json<{ jobs: { job_id: string }[] }>();
    expect([...all.jobs, ...next.jobs].map((j) => j.job_id)).toEqual([...tagged].reverse().slice(0, 4));

    const even = await mint({ scopes: ["read"], session_id: session, tags: ["even"] });
    const evens = await (await api("/api/v1/runs", { headers: bearer(even.token) })).json<{ total: number; jobs: { job_id: string }[] }>();
    expect(evens.total).toBe(3);
    expect(evens.jobs.map((j) => j.job_id)).toEqual([tagged[4], tagged[2], tagged[0]]);

    // Asking for another session leaves nothing; asking for its own is the same list.
    const elsewhere = await (await api(`/api/v1/runs?session_id=${session}-other`, { headers: bearer(token) })).json<{ total: number }>();
    expect(elsewhere.total).toBe(0);
    expect((await (await api(`/api/v1/runs?session_id=${session}`, { headers: bearer(token) })).json<{ total: number }>()).total).toBe(5);
  });

  it("a tag asked for in the query narrows the token's tags: the jobs carrying both", async () => {
    const session = `narrow-${crypto.randomUUID()}`;
    const both = await finishedJob({ session_id: session, tags: ["shared", "mine"] });
    await finishedJob({ session_id: session, tags: ["shared"] });
    const { token } = await mint({ scopes: ["read"], session_id: session, tags: ["shared"] });
    const listed = await (await api("/api/v1/runs?tag=mine", { headers: bearer(token) })).json<{ total: number; jobs: { job_id: string }[] }>();
    expect(listed.total).toBe(1);
    expect(listed.jobs.map((j) => j.job_id)).toEqual([both]);
  });

  it("the feed asked for another session than the token's tells nothing; asked for its own, its jobs", async () => {
    const session = `feed-${crypto.randomUUID()}`;
    const { token } = await mint({ scopes: ["read", "stream"], session_id: session });
    const open = async (query: string) => {
      const res = await api(`/api/v1/runs/events?${query}`, { headers: bearer(token) });
      expect(res.status).toBe(200);
      return res.body!.pipeThrough(new TextDecoderStream()).getReader();
    };
    const elsewhere = await open(`session_id=${session}-other`);
    const own = await open(`session_id=${session}`);
    const submitted = [];
    for (const where of [`${session}-other`, session]) {
      const res = await api("/api/v1/runs", {
        method: "POST",
        headers: { ...JSON_TYPE, ...ALPHA },
        body: JSON.stringify({ prompt: "p", session_id: where, delay_seconds: 3600 }),
      });
      expect(res.status).toBe(202);
      submitted.push((await res.json<{ job_id: string }>()).job_id);
    }
    // Its own session's job comes; by then, and a moment after, the other feed has told nothing.
    let told = "";
    while (!told.includes(submitted[1])) told += (await own.read()).value ?? "";
    expect(told).not.toContain(submitted[0]);
    expect(await readUntilQuiet(elsewhere)).not.toMatch(/^event:/m);
    await Promise.all([own.cancel(), elsewhere.cancel()]);
  });

  it("a token limited to runs cannot list or watch (403)", async () => {
    const id = await finishedJob();
    const { token } = await mint({ scopes: ["read", "stream"], runs: [id], session_id: "s1" });
    const list = await api("/api/v1/runs", { headers: bearer(token) });
    expect(list.status).toBe(403);
    expect(await list.json()).toEqual({ detail: "Token does not allow list" });
    const feed = await api(`/api/v1/runs/events?token=${token}`);
    expect(feed.status).toBe(403);
    expect(await feed.json()).toEqual({ detail: "Token does not allow the feed" });
  });
});
