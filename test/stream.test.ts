import { describe, expect, it } from "vitest";
import { api, drive, eventLog, getJob, parseSse, submit } from "./helpers";

describe("GET /api/v1/runs/{id}/stream", () => {
  it("replays a finished job's events in PraisonAI's format, then complete and [DONE]", async () => {
    const id = await submit({ steps: 2 });
    await drive(id);
    const res = await api(`/api/v1/runs/${id}/stream`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("text/event-stream; charset=utf-8");
    const events = parseSse(await res.text());
    expect(events.at(-1)!.data).toBe("[DONE]");
    const payloads = events.slice(0, -1).map((e) => JSON.parse(e.data) as { event: string; data: Record<string, unknown> });
    expect(payloads.at(-1)).toEqual({ event: "complete", data: { status: "succeeded", job_id: id, usage: (await getJob(id)).usage } });
    expect(new Set(payloads.map((p) => p.event))).toEqual(new Set(["progress", "log", "output", "complete"]));
    // id: lines count up from 1 without gaps; event: lines name the type.
    expect(events.slice(0, -1).map((e) => e.id)).toEqual(payloads.map((_, i) => i + 1));
    expect(events.slice(0, -1).map((e) => e.event)).toEqual(payloads.map((p) => p.event));
  });

  it("resumes after any position with ?after= or Last-Event-ID: exactly the suffix", async () => {
    const id = await submit({ steps: 2 });
    await drive(id);
    const all = await eventLog(id);
    for (let n = 0; n <= all.length - 1; n++) {
      expect(await eventLog(id, n)).toEqual(all.slice(n));
      const res = await api(`/api/v1/runs/${id}/stream`, { headers: { "Last-Event-ID": String(n) } });
      expect(parseSse(await res.text())).toEqual(all.slice(n));
    }
  });

  it("a client connected before the job starts receives every event through [DONE]", async () => {
    const id = await submit({ steps: 3 });
    const early = api(`/api/v1/runs/${id}/stream`).then((r) => r.text());
    const second = api(`/api/v1/runs/${id}/stream`).then((r) => r.text());
    await drive(id);
    const live = parseSse(await early);
    expect(live).toEqual(await eventLog(id));
    expect(parseSse(await second)).toEqual(live);
  });

  it("a bad event id → 400, an unknown job → 404", async () => {
    const id = await submit();
    const bad = await api(`/api/v1/runs/${id}/stream?after=abc`);
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ detail: "Invalid event id: abc" });
    const unknown = await api("/api/v1/runs/run_zzz/stream");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ detail: "Job not found: run_zzz" });
  });

  it("deleting the job ends a stream that is watching it", async () => {
    const id = await submit();
    const stream = await api(`/api/v1/runs/${id}/stream`); // open before the delete
    expect(stream.status).toBe(200);
    expect((await api(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
    const events = parseSse(await stream.text());
    expect(events.at(-2)).toMatchObject({ event: "complete" });
    expect(events.at(-1)!.data).toBe("[DONE]");
  });
});
