import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

// No API key is configured in this project: only a localhost host is served.
describe("with no API key configured", () => {
  it.each(["http://localhost", "http://127.0.0.1:8005", "http://[::1]:8005"])("serves %s as the default tenant", async (origin) => {
    expect((await SELF.fetch(`${origin}/api/v1/runs`)).status).toBe(200);
    expect((await SELF.fetch(`${origin}/stats`)).status).toBe(200);
  });

  it.each(["http://runs.example.com", "https://127.0.0.1.example.com", "http://10.0.0.1", "http://localhost.evil.dev"])(
    "refuses %s with 401: an API key is required",
    async (origin) => {
      for (const path of ["/api/v1/runs", "/stats", "/api/v1/runs/run_abc"]) {
        const res = await SELF.fetch(`${origin}${path}`, { headers: { Authorization: "Bearer anything" } });
        expect(res.status).toBe(401);
        expect(res.headers.get("WWW-Authenticate")).toBe("Bearer");
        expect(await res.json()).toEqual({ detail: "An API key is required for non-localhost access" });
      }
      expect((await SELF.fetch(`${origin}/health`)).status).toBe(200);
    },
  );
});
