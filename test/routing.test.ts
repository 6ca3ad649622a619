/**
 * Requests that no route serves are answered as FastAPI answers them: a known path asked with
 * another method → 405 with `Allow`; a known path with a trailing slash → 307 to it without the
 * slash (so a client that writes `/api/v1/runs/` works, as it does against PraisonAI's server);
 * anything else → 404.
 */
import { describe, expect, it } from "vitest";
import { api, BASE, getJob } from "./helpers";

describe("paths the API has, asked another way", () => {
  it.each([
    ["PUT", "/api/v1/runs", "GET, HEAD, POST"],
    ["DELETE", "/api/v1/runs", "GET, HEAD, POST"],
    ["PATCH", "/api/v1/runs/run_AAAAAAAAAAAAAAAAAAAAAAAA", "DELETE, GET, HEAD"],
    ["GET", "/api/v1/runs/run_AAAAAAAAAAAAAAAAAAAAAAAA/cancel", "POST"],
    ["POST", "/health", "GET, HEAD"],
    ["GET", "/api/v1/tokens", "POST"],
    // The pages are routes too: the router's own table says which paths exist.
    ["POST", "/", "GET, HEAD"],
    ["DELETE", "/app.js", "GET, HEAD"],
  ])("%s %s → 405 Method Not Allowed, Allow: %s", async (method, path, allow) => {
    const res = await api(path, { method });
    expect(res.status).toBe(405);
    expect(res.headers.get("Allow")).toBe(allow);
    expect(await res.json()).toEqual({ detail: "Method Not Allowed" });
  });

  it("a trailing slash → 307 to the path without it, query kept; following it works", async () => {
    const listed = await api("/api/v1/runs/?session_id=slash&page_size=1", { redirect: "manual" });
    expect(listed.status).toBe(307);
    expect(listed.headers.get("Location")).toBe(`${BASE}/api/v1/runs?session_id=slash&page_size=1`);

    const body = JSON.stringify({ prompt: "x", session_id: "slash" });
    const init = { method: "POST", headers: { "content-type": "application/json" }, body };
    const redirected = await api("/api/v1/runs/", { ...init, redirect: "manual" });
    expect(redirected.status).toBe(307);
    expect(redirected.headers.get("Location")).toBe(`${BASE}/api/v1/runs`);
    expect((await (await api("/api/v1/runs?session_id=slash")).json<{ total: number }>()).total).toBe(0);
    // A client that follows redirects (fetch, Python's requests) sends the POST again, body and all: one job.
    const followed = await api("/api/v1/runs/", init);
    expect(followed.status).toBe(202);
    const { job_id } = await followed.json<{ job_id: string }>();
    expect((await (await api("/api/v1/runs?session_id=slash")).json<{ total: number }>()).total).toBe(1);

    const status = await api(`/api/v1/runs/${job_id}/`, { redirect: "manual" });
    expect(status.status).toBe(307);
    expect(status.headers.get("Location")).toBe(`${BASE}/api/v1/runs/${job_id}`);
    expect((await getJob(job_id)).session_id).toBe("slash");
  });

  it("anything else → 404 Not Found, with or without a slash", async () => {
    for (const path of ["/nope", "/nope/", "/api/v1/nope/", "//api/v1/runs/", "/api/v1/runs/run_A/cancel/extra/"]) {
      const res = await api(path, { redirect: "manual" });
      expect(res.status, path).toBe(404);
      expect(await res.json()).toEqual({ detail: "Not Found" });
    }
  });
});
