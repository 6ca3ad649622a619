/**
 * A 100 MiB output over HTTP against `wrangler dev`: streamed whole and byte-exact, Range reads
 * right, and the server's memory bounded while it streams.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { simulatedRunner } from "../../src/runners/simulated";
import { peakRssDuring, treeRss } from "./procfs";
import { BASE, startServer, stopServer, type DevServer } from "./server";

const MiB = 1024 * 1024;
const SIZE = 100 * MiB;
const STEPS = 4;
const PROMPT = "a hundred mebibytes";
const config = { simulate: { steps: STEPS, step_ms: 1, output_bytes: SIZE } };

let server: DevServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  if (server) await stopServer(server);
});

/** The bytes the simulated runner produces for this job, straight from the runner. */
async function expectedSha256(): Promise<string> {
  const hash = createHash("sha256");
  for (let index = 1; index <= STEPS; index++) {
    const output = await simulatedRunner.runStep({
      prompt: PROMPT,
      index,
      total: STEPS,
      task: `step_${index}`,
      config,
      signal: new AbortController().signal,
    });
    for await (const chunk of output.body as unknown as AsyncIterable<Uint8Array>) hash.update(chunk);
  }
  return hash.digest("hex");
}

/** Reads a response body chunk by chunk, hashing it without keeping it. */
async function hashBody(res: Response): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    bytes += chunk.byteLength;
  }
  return { sha256: hash.digest("hex"), bytes };
}

describe("a 100 MiB output", () => {
  let id: string;
  let whole: { sha256: string; bytes: number };

  it("is produced, then streamed whole and byte-exact while the server's memory stays bounded", async () => {
    const res = await fetch(`${BASE}/api/v1/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: PROMPT, config }),
    });
    id = ((await res.json()) as { job_id: string }).job_id;
    for (let i = 0; i < 600; i++) {
      const job = (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()) as { status: string };
      if (job.status === "succeeded") break;
      expect(["queued", "running"]).toContain(job.status);
      await new Promise((r) => setTimeout(r, 100));
    }

    const result = (await (await fetch(`${BASE}/api/v1/runs/${id}/result`)).json()) as Record<string, unknown>;
    expect(result.result).toBeNull();
    expect(result.result_url).toBe(`${BASE}/api/v1/runs/${id}/output`);

    const baseline = treeRss(server.process.pid!);
    const { value, peak } = await peakRssDuring(server.process.pid!, async () => {
      const out = await fetch(`${BASE}/api/v1/runs/${id}/output`);
      expect(out.status).toBe(200);
      expect(out.headers.get("content-length")).toBe(String(SIZE));
      return hashBody(out);
    });
    whole = value;
    const growth = peak - baseline;
    console.log(`dev server RSS while streaming 100 MiB: baseline ${(baseline / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB, growth ${(growth / MiB).toFixed(1)} MiB`);
    expect(whole.bytes).toBe(SIZE);
    expect(whole.sha256).toBe(await expectedSha256());
    expect(growth).toBeLessThan(64 * MiB);
  });

  it("answers Range reads with exactly the right bytes", async () => {
    const ranges: [number, number][] = [
      [0, 99],
      [SIZE / 4 - 10, SIZE / 4 + 10], // across the first step boundary
      [SIZE / 2, SIZE / 2 + MiB - 1],
      [SIZE - 64, SIZE - 1],
    ];
    const full = Buffer.from(await (await fetch(`${BASE}/api/v1/runs/${id}/output`)).arrayBuffer());
    expect(createHash("sha256").update(full).digest("hex")).toBe(whole.sha256);
    for (const [start, end] of ranges) {
      const res = await fetch(`${BASE}/api/v1/runs/${id}/output`, { headers: { Range: `bytes=${start}-${end}` } });
      expect(res.status).toBe(206);
      expect(res.headers.get("content-range")).toBe(`bytes ${start}-${end}/${SIZE}`);
      expect(Buffer.from(await res.arrayBuffer()).equals(full.subarray(start, end + 1))).toBe(true);
    }
    const beyond = await fetch(`${BASE}/api/v1/runs/${id}/output`, { headers: { Range: `bytes=${SIZE}-` } });
    expect(beyond.status).toBe(416);
  });

  it("is deleted whole: every part gone, the job 404", async () => {
    expect((await fetch(`${BASE}/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
    expect((await fetch(`${BASE}/api/v1/runs/${id}/output`)).status).toBe(404);
  });
});

describe("a retry of a job with 100 MiB of finished output", () => {
  const failing = { simulate: { steps: 3, step_ms: 1, output_bytes: 150 * MiB, fail_at_step: 3 } };
  const rangeOf100 = { Range: `bytes=0-${SIZE - 1}` };

  async function until(id: string, status: string): Promise<Record<string, unknown>> {
    for (let i = 0; i < 900; i++) {
      const job = (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()) as Record<string, unknown>;
      if (job.status === status) return job;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`job ${id} never reached ${status}`);
  }

  it("copies it byte for byte with bounded memory, and outlives the deletion of the old job", async () => {
    const res = await fetch(`${BASE}/api/v1/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: PROMPT, config: failing }) });
    const old = ((await res.json()) as { job_id: string }).job_id;
    expect(await until(old, "failed")).toMatchObject({ progress: { steps_completed: 2 } });
    const oldHash = await hashBody(await fetch(`${BASE}/api/v1/runs/${old}/output`));
    expect(oldHash.bytes).toBe(SIZE);

    const baseline = treeRss(server.process.pid!);
    const { value: retried, peak } = await peakRssDuring(server.process.pid!, async () => {
      const answer = await fetch(`${BASE}/api/v1/runs/${old}/retry`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ config: { simulate: { steps: 3, step_ms: 1, output_bytes: 150 * MiB } } }),
      });
      expect(answer.status).toBe(202);
      return ((await answer.json()) as { job_id: string }).job_id;
    });
    const growth = peak - baseline;
    console.log(`dev server RSS while a retry copies 100 MiB: baseline ${(baseline / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB, growth ${(growth / MiB).toFixed(1)} MiB`);
    expect(growth).toBeLessThan(64 * MiB);
    expect(await until(retried, "succeeded")).toMatchObject({ retry_of: old });

    const copied = await hashBody(await fetch(`${BASE}/api/v1/runs/${retried}/output`, { headers: rangeOf100 }));
    expect(copied).toEqual(oldHash);
    expect((await fetch(`${BASE}/api/v1/runs/${old}`, { method: "DELETE" })).status).toBe(204);
    expect(await hashBody(await fetch(`${BASE}/api/v1/runs/${retried}/output`, { headers: rangeOf100 }))).toEqual(oldHash);
    expect((await fetch(`${BASE}/api/v1/runs/${retried}`, { method: "DELETE" })).status).toBe(204);
  });
});
