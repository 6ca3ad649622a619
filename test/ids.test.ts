import { describe, expect, it } from "vitest";
import { api, JOB_ENDPOINTS } from "./helpers";

// Path ids that can never name a job: each endpoint answers like an unknown id, never 500.
const HOSTILE = [
  ["an encoded slash", "run_a%2Fb"],
  ["an encoded slash pair", "%2F%2F"],
  ["dot dot", "run_..%2F.."],
  ["encoded dot dot", "%2E%2E%2Frun_x"],
  ["unicode", "run_%E2%9C%93%F0%9F%98%80"],
  ["invalid UTF-8", "run_%FF%FE"],
  ["a NUL", "run_a%00b"],
  ["10 KB", `run_${"a".repeat(10 * 1024)}`],
  ["spaces and quotes", "run_%20%22%27%3C"],
  ["a wrong prefix", "job_abc123"],
] as const;

describe("hostile job ids", () => {
  for (const [name, id] of HOSTILE) {
    it(`${name}: every endpoint answers 4xx with a detail`, async () => {
      for (const [method, suffix] of JOB_ENDPOINTS) {
        const res = await api(`/api/v1/runs/${id}${suffix}`, { method });
        expect(res.status, `${method} ${suffix}`).toBeGreaterThanOrEqual(400);
        expect(res.status, `${method} ${suffix}`).toBeLessThan(500);
        const body = await res.json<{ detail: string }>();
        expect(typeof body.detail).toBe("string");
      }
    });
  }

  it("answers an id of the wrong form exactly like an unknown id, echoing it", async () => {
    const res = await api("/api/v1/runs/job_abc123");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Job not found: job_abc123" });
    const long = `run_${"a".repeat(10 * 1024)}`;
    expect(await (await api(`/api/v1/runs/${long}`)).json()).toEqual({ detail: `Job not found: ${long}` });
  });
});
