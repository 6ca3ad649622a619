import pkg from "../package.json";
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, drive, finished, getJob, submit, submitQueued } from "./helpers";

describe("GET /api/v1/runs/{id}", () => {
  it("shows progress, timestamps and expiry through the job's life", async () => {
    const id = await submit({ steps: 2 });
    const job = await drive(id);
    expect(job.status).toBe("succeeded");
    expect(job.progress).toEqual({ percentage: 100, current_step: null, steps_completed: 2, steps_total: 2 });
    expect(job.retry_after).toBeNull();
    expect(Date.parse(job.started_at!)).toBeGreaterThanOrEqual(Date.parse(job.created_at));
    expect(Date.parse(job.completed_at!)).toBeGreaterThanOrEqual(Date.parse(job.started_at!));
    expect(Date.parse(job.expires_at!) - Date.parse(job.completed_at!)).toBe(7 * 86400 * 1000);
  });

  it("answers an unknown id with 404 and the id", async () => {
    const res = await api("/api/v1/runs/run_doesnotexist000000000000");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Job not found: run_doesnotexist000000000000" });
  });
});

describe("GET /api/v1/runs/{id}/result", () => {
  it("succeeded → 200 with the output inline and result_url", async () => {
    const id = await finished({ steps: 2 }, { prompt: "hello" });
    const res = await api(`/api/v1/runs/${id}/result`);
    expect(res.status).toBe(200);
    const body = await res.json<Record<string, unknown>>();
    expect(body).toMatchObject({
      job_id: id,
      status: "succeeded",
      result: "Step 1/2 (step_1): simulated answer to: hello\nStep 2/2 (step_2): simulated answer to: hello\n",
      result_url: `http://localhost/api/v1/runs/${id}/output`,
      error: null,
    });
    expect(body.duration_seconds).toBeGreaterThanOrEqual(0);
    expect(body.started_at).toBeTruthy();
    expect(body.completed_at).toBeTruthy();
  });

  it("an output over the inline limit → result null, result_url to /output", async () => {
    const id = await finished({ steps: 2, output_bytes: 1024 * 1024 + 1 });
    const body = await (await api(`/api/v1/runs/${id}/result`)).json<Record<string, unknown>>();
    expect(body.result).toBeNull();
    expect(body.result_url).toBe(`http://localhost/api/v1/runs/${id}/output`);
  });

  it("an output exactly at the inline limit is inline", async () => {
    const id = await finished({ steps: 3, output_bytes: 1024 * 1024 });
    const body = await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string }>();
    expect(body.result.length).toBe(1024 * 1024);
  });

  it("queued → 400 Job is still queued", async () => {
    const id = await submitQueued();
    const res = await api(`/api/v1/runs/${id}/result`);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Job is still queued. Current status: queued" });
  });

  it("failed → 400 with the error", async () => {
    const id = await finished({ steps: 3, fail_at_step: 2 });
    const res = await api(`/api/v1/runs/${id}/result`);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      detail: "Job failed. No result available.",
      error: "Simulated failure at step 2 of 3",
    });
  });

  it("cancelled → 400", async () => {
    const id = await submit();
    await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
    const res = await api(`/api/v1/runs/${id}/result`);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Job was cancelled. No result available." });
  });

  it("unknown → 404", async () => {
    const res = await api("/api/v1/runs/run_nope/result");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Job not found: run_nope" });
  });
});

describe("GET /api/v1/runs/{id}/output", () => {
  it("streams the whole output with an ETag and Content-Length", async () => {
    const id = await finished({ steps: 3, output_bytes: 300_000 });
    const res = await api(`/api/v1/runs/${id}/output`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("text/plain; charset=utf-8");
    expect(res.headers.get("Content-Length")).toBe("300000");
    expect(res.headers.get("ETag")).toMatch(/^"[0-9a-f]{32}"$/);
    expect(res.headers.get("X-Run-Status")).toBe("succeeded");
    const text = await res.text();
    expect(text.length).toBe(300_000);
    expect(text.startsWith("step 1/3 ")).toBe(true);
    expect(text.slice(100_000, 100_009)).toBe("step 2/3 ");
    expect(text.slice(200_000, 200_009)).toBe("step 3/3 ");
  });

  it("serves byte ranges across step boundaries (206) and refuses impossible ones (416)", async () => {
    const id = await finished({ steps: 3, output_bytes: 3000 });
    const whole = await (await api(`/api/v1/runs/${id}/output`)).text();
    for (const [range, start, end] of [
      ["bytes=0-9", 0, 9],
      ["bytes=995-1005", 995, 1005],
      ["bytes=1990-", 1990, 2999],
      ["bytes=-10", 2990, 2999],
      ["bytes=2990-5000", 2990, 2999],
      // A suffix longer than the output is the whole of it (RFC 9110 §14.1.1).
      ["bytes=-5000", 0, 2999],
    ] as const) {
      const res = await api(`/api/v1/runs/${id}/output`, { headers: { Range: range } });
      expect(res.status).toBe(206);
      expect(res.headers.get("Content-Range")).toBe(`bytes ${start}-${end}/3000`);
      expect(await res.text()).toBe(whole.slice(start, end + 1));
    }
    const bad = await api(`/api/v1/runs/${id}/output`, { headers: { Range: "bytes=3000-" } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get("Content-Range")).toBe("bytes */3000");
    expect((await bad.json<{ detail: string }>()).detail).toContain("Range not satisfiable");
    // A last byte before the first is no range (RFC 9110 §14.1.1): the whole output, as without one.
    // So is a range with neither first nor last byte, or of more than one range.
    for (const range of ["bytes=5-1", "bytes=-", "bytes=0-9,20-29"]) {
      const ignored = await api(`/api/v1/runs/${id}/output`, { headers: { Range: range } });
      expect(ignored.status, range).toBe(200);
      expect(ignored.headers.get("Content-Range")).toBeNull();
      expect(await ignored.text()).toBe(whole);
    }
  });

  it("answers HEAD with headers only, and If-None-Match with 304", async () => {
    const id = await finished({ steps: 1, output_bytes: 5000 });
    const head = await api(`/api/v1/runs/${id}/output`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Length")).toBe("5000");
    expect(await head.text()).toBe("");
    const etag = head.headers.get("ETag")!;
    const again = await api(`/api/v1/runs/${id}/output`, { headers: { "If-None-Match": etag } });
    expect(again.status).toBe(304);
  });

  it("If-None-Match matches weakly and by list or *; If-Match needs the ETag or 412", async () => {
    const id = await finished({ steps: 1, output_bytes: 3000 });
    const output = (headers: Record<string, string>) => api(`/api/v1/runs/${id}/output`, { headers });
    const etag = (await api(`/api/v1/runs/${id}/output`, { method: "HEAD" })).headers.get("ETag")!;
    for (const inm of [`W/${etag}`, `"other", ${etag}`, "*"]) expect((await output({ "If-None-Match": inm })).status).toBe(304);
    expect((await output({ "If-None-Match": '"other"' })).status).toBe(200);

    for (const im of [etag, `"other", ${etag}`, "*"]) expect((await output({ "If-Match": im })).status).toBe(200);
    for (const im of ['"other"', `W/${etag}`]) {
      const res = await output({ "If-Match": im, Range: "bytes=0-9" });
      expect(res.status).toBe(412);
      expect(res.headers.get("ETag")).toBe(etag);
      expect(await res.json()).toEqual({ detail: `Precondition failed: the output's ETag is ${etag}` });
    }
  });

  it("If-Range: the range while the ETag is the same, else the whole output", async () => {
    const id = await finished({ steps: 1, output_bytes: 3000 });
    const whole = await (await api(`/api/v1/runs/${id}/output`)).text();
    const etag = (await api(`/api/v1/runs/${id}/output`, { method: "HEAD" })).headers.get("ETag")!;
    const same = await api(`/api/v1/runs/${id}/output`, { headers: { Range: "bytes=100-", "If-Range": etag } });
    expect(same.status).toBe(206);
    expect(await same.text()).toBe(whole.slice(100));
    // Another ETag, a weak one (If-Range compares strongly) or a date (the output sends no Last-Modified).
    for (const ifRange of ['"other"', `W/${etag}`, new Date().toUTCString()]) {
      const res = await api(`/api/v1/runs/${id}/output`, { headers: { Range: "bytes=100-", "If-Range": ifRange } });
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Range")).toBeNull();
      expect(await res.text()).toBe(whole);
    }
  });

  it("serves the partial output of a failed job, marked with X-Run-Status", async () => {
    const id = await finished({ steps: 3, fail_at_step: 3 }, { prompt: "p" });
    const res = await api(`/api/v1/runs/${id}/output`);
    expect(res.status).toBe(200);
    expect(res.headers.get("X-Run-Status")).toBe("failed");
    expect(await res.text()).toBe("Step 1/3 (step_1): simulated answer to: p\nStep 2/3 (step_2): simulated answer to: p\n");
  });

  it("no output yet → 404 No output for job", async () => {
    const id = await submit();
    const res = await api(`/api/v1/runs/${id}/output`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: `No output for job: ${id}` });
  });
});

describe("GET /api/v1/runs (list)", () => {
  // One tenant's projection is shared by every test in this file, so each test filters by its own session.
  it("lists newest first with total, page and page_size, filtered by session", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await submit({}, { session_id: "list-order" }));
    const res = await api("/api/v1/runs?session_id=list-order&page_size=2");
    expect(res.status).toBe(200);
    const body = await res.json<{ jobs: { job_id: string }[]; total: number; page: number; page_size: number; next_cursor: string | null }>();
    expect(body.total).toBe(5);
    expect(body.page).toBe(1);
    expect(body.page_size).toBe(2);
    expect(body.jobs.map((j) => j.job_id)).toEqual([ids[4], ids[3]]);
    const page3 = await (await api("/api/v1/runs?session_id=list-order&page_size=2&page=3")).json<{ jobs: { job_id: string }[]; next_cursor: string | null }>();
    expect(page3.jobs.map((j) => j.job_id)).toEqual([ids[0]]);
    expect(page3.next_cursor).toBeNull();
  });

  it("walks every job exactly once by cursor", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await submit({}, { session_id: "list-cursor" }));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const url: string = `/api/v1/runs?session_id=list-cursor&page_size=3${cursor ? `&cursor=${cursor}` : ""}`;
      const body = await (await api(url)).json<{ jobs: { job_id: string }[]; next_cursor: string | null; total: number }>();
      expect(body.total).toBe(7);
      seen.push(...body.jobs.map((j) => j.job_id));
      cursor = body.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
  });

  it("filters by status and shows the job's current status", async () => {
    const done = await finished({ steps: 1 }, { session_id: "list-status" });
    const waiting = await submitQueued({}, { session_id: "list-status" });
    const succeeded = await (await api("/api/v1/runs?session_id=list-status&status=succeeded")).json<{ jobs: { job_id: string; status: string }[]; total: number }>();
    expect(succeeded.total).toBe(1);
    expect(succeeded.jobs).toMatchObject([{ job_id: done, status: "succeeded" }]);
    const queued = await (await api("/api/v1/runs?session_id=list-status&status=queued")).json<{ jobs: { job_id: string }[] }>();
    expect(queued.jobs.map((j) => j.job_id)).toEqual([waiting]);
  });

  it("reads a scalar parameter given more than once by its last value, as FastAPI does", async () => {
    const done = await finished({ steps: 1 }, { session_id: "list-repeated" });
    const waiting = await submitQueued({}, { session_id: "list-repeated" });
    const ids = async (query: string) => {
      const res = await api(`/api/v1/runs?${query}`);
      expect(res.status).toBe(200);
      return (await res.json<{ jobs: { job_id: string }[] }>()).jobs.map((j) => j.job_id);
    };
    expect(await ids("session_id=list-repeated&status=queued&status=succeeded")).toEqual([done]);
    expect(await ids("session_id=list-repeated&status=succeeded&status=queued")).toEqual([waiting]);
    expect(await ids("session_id=elsewhere&session_id=list-repeated")).toEqual([waiting, done]);
    expect(await ids("session_id=list-repeated&page_size=1&page=1&page=2")).toEqual([done]);
    // The last value is the one checked.
    expect((await api("/api/v1/runs?status=queued&status=done")).status).toBe(400);
    expect((await api("/api/v1/runs?page=1&page=0")).status).toBe(422);
  });

  it("reads an empty status or session_id as not given, as PraisonAI's server does", async () => {
    const done = await finished({ steps: 1 }, { session_id: "list-empty" });
    const waiting = await submitQueued({}, { session_id: "list-empty" });
    const page = async (query: string) => {
      const res = await api(`/api/v1/runs?${query}`);
      expect(res.status).toBe(200);
      return res.json<{ jobs: { job_id: string }[]; total: number }>();
    };
    expect((await page("session_id=list-empty&status=")).jobs.map((j) => j.job_id)).toEqual([waiting, done]);
    // Every session: the same total as no filter at all.
    const all = (await page("page_size=1")).total;
    expect(all).toBeGreaterThanOrEqual(2);
    expect((await page("session_id=&status=&page_size=1")).total).toBe(all);
  });

  it("an unknown status → 400 naming the valid values", async () => {
    const res = await api("/api/v1/runs?status=done");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      detail: "Invalid status: done. Valid values: ['queued', 'running', 'awaiting_input', 'succeeded', 'failed', 'cancelled']",
    });
  });

  it.each(["page_size=0", "page_size=101", "page=0", "page=abc", "page_size=1.5"])("%s → 422", async (query) => {
    const res = await api(`/api/v1/runs?${query}`);
    expect(res.status).toBe(422);
    const { detail } = await res.json<{ detail: { loc: string[] }[] }>();
    expect(detail[0].loc[0]).toBe("query");
    expect(detail[0].loc[1]).toBe(query.split("=")[0]);
  });

  it("a page past any integer's range is refused once, by its own limit", async () => {
    const res = await api("/api/v1/runs?page=99999999999999999999");
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({ detail: [{ loc: ["query", "page"], msg: "Too big: expected number to be <=1000000", type: "too_big" }] });
  });

  it("a forged cursor → 400", async () => {
    const res = await api("/api/v1/runs?cursor=%%%");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: "Invalid cursor" });
  });
});

describe("/stats, /health, /openapi.json", () => {
  it("counts the tenant's jobs by status", async () => {
    const before = await (await api("/stats")).json<{ total_jobs: number; by_status: Record<string, number> }>();
    await submitQueued();
    await finished({ steps: 1, fail_at_step: 1 });
    const after = await (await api("/stats")).json<{ total_jobs: number; by_status: Record<string, number> }>();
    expect(Object.keys(after.by_status).sort()).toEqual(["awaiting_input", "cancelled", "failed", "queued", "running", "succeeded"]);
    expect(after.total_jobs).toBe(before.total_jobs + 2);
    expect(after.by_status.queued).toBe(before.by_status.queued + 1);
    expect(after.by_status.failed).toBe(before.by_status.failed + 1);
  });

  it("reports health, the simulated runner and the build's version", async () => {
    const res = await api("/health");
    const body = await res.json<{ status: string; runner: string; version: string }>();
    expect(body).toEqual({ status: "healthy", runner: "simulated", version: expect.any(String) });
    // The package's version, and the deployed Worker version's id where the platform gives one.
    expect(body.version).toMatch(new RegExp(`^${pkg.version.replaceAll(".", "\\.")}(\\+[0-9a-f-]{8})?$`));
  });

  it("serves an OpenAPI 3.1 document of every route", async () => {
    const res = await api("/openapi.json");
    if (res.status !== 200) throw new Error(await res.text());
    const doc = await res.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths).sort()).toEqual([
      "/api/v1/runs",
      "/api/v1/runs/bulk/cancel",
      "/api/v1/runs/bulk/delete",
      "/api/v1/runs/bulk/{bulk_id}",
      "/api/v1/runs/events",
      "/api/v1/runs/{id}",
      "/api/v1/runs/{id}/cancel",
      "/api/v1/runs/{id}/input",
      "/api/v1/runs/{id}/output",
      "/api/v1/runs/{id}/result",
      "/api/v1/runs/{id}/retry",
      "/api/v1/runs/{id}/stream",
      "/api/v1/tokens",
      "/api/v1/tokens/verify",
      "/health",
      "/stats",
    ]);
    expect(Object.keys(doc.paths["/api/v1/runs"]).sort()).toEqual(["get", "post"]);
    expect(Object.keys(doc.paths["/api/v1/runs/{id}"]).sort()).toEqual(["delete", "get"]);
  });

  it("an unknown route → 404 with a detail", async () => {
    const res = await api("/api/v2/nothing");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Not Found" });
  });

  it("a job reading does not depend on the projection", async () => {
    const id = await submitQueued();
    expect((await getJob(id)).status).toBe("queued");
    expect(env.OUTPUTS).toBeDefined();
  });
});
