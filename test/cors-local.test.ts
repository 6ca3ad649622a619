import { describe, expect, it } from "vitest";
import { FixedWindowLimiter } from "../src/http/ratelimit";
import { api, post } from "./helpers";

describe("CORS in local development (no keys, no CORS_ORIGINS)", () => {
  it.each(["http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8080"])("allows %s and exposes the headers clients need", async (origin) => {
    const preflight = await api("/api/v1/runs", {
      method: "OPTIONS",
      headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("Access-Control-Allow-Origin")).toBe(origin);
    expect(preflight.headers.get("Access-Control-Allow-Methods")).toContain("DELETE");

    const res = await post("/api/v1/runs", { prompt: "x" }, { Origin: origin });
    expect(res.status).toBe(202);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(origin);
    const exposed = res.headers.get("Access-Control-Expose-Headers")!.split(",").map((h) => h.trim());
    expect(exposed).toEqual(expect.arrayContaining(["Location", "Retry-After", "Idempotent-Replayed", "X-Request-Id"]));
  });

  it.each([
    ["a stream where it left off: Last-Event-ID is allowed", "/api/v1/runs/events", ["authorization", "last-event-id"]],
    ["a download of the output: Range and the conditional headers are allowed", "/api/v1/runs/run_x/output", ["range", "if-range", "if-match", "if-none-match"]],
  ])("lets a page resume %s", async (_what, path, headers) => {
    const preflight = await api(path, {
      method: "OPTIONS",
      headers: { Origin: "http://localhost:3000", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": headers.join(", ") },
    });
    expect(preflight.status).toBe(204);
    const allowed = preflight.headers.get("Access-Control-Allow-Headers")!.split(",").map((h) => h.trim().toLowerCase());
    expect(allowed).toEqual(expect.arrayContaining(headers));
  });

  it.each(["https://evil.example.com", "http://localhost.evil.com", "null"])("allows no other origin: %s", async (origin) => {
    const res = await api("/api/v1/runs", { headers: { Origin: origin } });
    expect(res.headers.get("Access-Control-Allow-Origin")).toBeNull();
  });
});

describe("the fallback rate limiter (no RATE_LIMITER binding)", () => {
  it("allows `limit` hits per key per window, then says how long to wait", () => {
    let now = 1_000_000;
    const limiter = new FixedWindowLimiter(3, 60_000, () => now);
    expect([limiter.hit("a"), limiter.hit("a"), limiter.hit("a")]).toEqual([0, 0, 0]);
    now += 15_000;
    expect(limiter.hit("a")).toBe(45_000);
    expect(limiter.hit("b")).toBe(0);
    now += 45_000;
    expect(limiter.hit("a")).toBe(0);
  });
});
