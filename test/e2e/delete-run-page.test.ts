/** The flows of PraisonAI's Delete Run page, over HTTP against `wrangler dev`, as a PraisonAI client would run them. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BASE, startServer, stopServer, type DevServer } from "./server";

let server: DevServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  if (server) await stopServer(server);
});

const sleep = (s: number) => new Promise((r) => setTimeout(r, s * 1000));

async function submit(simulate: Record<string, number>, prompt = "e2e"): Promise<{ job_id: string; poll_url: string }> {
  const res = await fetch(`${BASE}/api/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, config: { simulate } }),
  });
  expect(res.status).toBe(202);
  return res.json() as Promise<{ job_id: string; poll_url: string }>;
}

const getJob = async (id: string) => (await fetch(`${BASE}/api/v1/runs/${id}`)).json() as Promise<Record<string, any>>;

async function pollUntilDone(id: string): Promise<Record<string, any>> {
  for (let i = 0; i < 30; i++) {
    const job = await getJob(id);
    if (job.retry_after === null) return job;
    await sleep(job.retry_after);
  }
  throw new Error(`job ${id} did not finish`);
}

describe("the flows of PraisonAI's Delete Run page over HTTP", () => {
  it("submit, poll with retry_after, fetch the result", async () => {
    const { job_id, poll_url } = await submit({ steps: 2, step_ms: 200 }, "seed");
    expect(poll_url).toBe(`${BASE}/api/v1/runs/${job_id}`);
    const job = await pollUntilDone(job_id);
    expect(job.status).toBe("succeeded");
    const result = await (await fetch(`${poll_url}/result`)).json();
    expect(result).toMatchObject({
      status: "succeeded",
      result: "Step 1/2 (step_1): simulated answer to: seed\nStep 2/2 (step_2): simulated answer to: seed\n",
    });
  });

  it("delete of a running job → 400; cancel then delete → 204; then 404", async () => {
    const { job_id } = await submit({ steps: 3, step_ms: 5000 });
    for (let i = 0; i < 50 && (await getJob(job_id)).status !== "running"; i++) await sleep(0.1);
    expect((await getJob(job_id)).status).toBe("running");

    const refused = await fetch(`${BASE}/api/v1/runs/${job_id}`, { method: "DELETE" });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ detail: "Cannot delete running job. Cancel it first." });

    // force_delete_job() of the Delete Run page: cancel if queued or running, then delete.
    const status = await getJob(job_id);
    if (["queued", "running"].includes(status.status)) {
      const cancelled = await fetch(`${BASE}/api/v1/runs/${job_id}/cancel`, { method: "POST" });
      expect(cancelled.status).toBe(200);
    }
    const deleted = await fetch(`${BASE}/api/v1/runs/${job_id}`, { method: "DELETE" });
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe("");

    const gone = await fetch(`${BASE}/api/v1/runs/${job_id}`);
    expect(gone.status).toBe(404);
    expect(await gone.json()).toEqual({ detail: `Job not found: ${job_id}` });
    const again = await fetch(`${BASE}/api/v1/runs/${job_id}`, { method: "DELETE" });
    expect(again.status).toBe(404);
  });

  it("deletes an unknown job → 404 like the Delete Run page's curl example", async () => {
    const res = await fetch(`${BASE}/api/v1/runs/run_abc123`, { method: "DELETE" });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: "Job not found: run_abc123" });
  });

  it("force-deletes a running job in one call", async () => {
    const { job_id } = await submit({ steps: 3, step_ms: 5000 });
    const res = await fetch(`${BASE}/api/v1/runs/${job_id}?force=true`, { method: "DELETE" });
    expect(res.status).toBe(204);
    expect((await fetch(`${BASE}/api/v1/runs/${job_id}`)).status).toBe(404);
    const list = (await (await fetch(`${BASE}/api/v1/runs?page_size=100`)).json()) as { jobs: { job_id: string }[] };
    expect(list.jobs.map((j) => j.job_id)).not.toContain(job_id);
  });

  it("keeps jobs across a restart of the server", async () => {
    const { job_id } = await submit({ steps: 1, step_ms: 10 }, "persist");
    const before = await pollUntilDone(job_id);
    await stopServer(server);
    server = await startServer(server.persistTo);
    expect(await getJob(job_id)).toEqual(before);
    const result = (await (await fetch(`${BASE}/api/v1/runs/${job_id}/result`)).json()) as { result: string };
    expect(result.result).toBe("Step 1/1 (step_1): simulated answer to: persist\n");
  });
});

describe("a live stream over HTTP", () => {
  it("delivers events as they happen and a heartbeat comment within 15 s of silence", async () => {
    const { job_id } = await submit({ steps: 2, step_ms: 20_000 });
    const res = await fetch(`${BASE}/api/v1/runs/${job_id}/stream`);
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const opened = Date.now();
    while (!text.includes(": ping\n\n") && Date.now() - opened < 20_000) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    await reader.cancel();
    expect(text).toContain('data: {"event":"progress","data":{"percentage":0,"step":1,"current_step":"step_1"}}');
    expect(text).toContain(": ping\n\n");
    expect((await fetch(`${BASE}/api/v1/runs/${job_id}?force=true`, { method: "DELETE" })).status).toBe(204);
  });
});
