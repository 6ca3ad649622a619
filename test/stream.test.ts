import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, drive, driveTo, eventLog, getJob, parseSse, runStub, submit } from "./helpers";

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

  it("with both, Last-Event-ID wins over ?after=: an EventSource reconnects to the same address with the last id it had", async () => {
    const id = await submit({ steps: 2 });
    await drive(id);
    const all = await eventLog(id);
    const res = await api(`/api/v1/runs/${id}/stream?after=2`, { headers: { "Last-Event-ID": "5" } });
    expect(parseSse(await res.text())).toEqual(all.slice(5));
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

  it("HEAD answers the stream's headers and opens no stream; an unknown job → 404", async () => {
    const id = await submit({ steps: 3 });
    const watchers = () => runInDurableObject(runStub(id), (instance) => (instance as unknown as { watchers: { size: number } }).watchers.size);
    for (const query of ["", "?format=named"]) {
      const res = await api(`/api/v1/runs/${id}/stream${query}`, { method: "HEAD" });
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Type")).toBe("text/event-stream; charset=utf-8");
      expect(await res.text()).toBe("");
    }
    expect(await watchers()).toBe(0);
    expect((await api("/api/v1/runs/run_AAAAAAAAAAAAAAAAAAAAAAAA/stream", { method: "HEAD" })).status).toBe(404);
    expect((await api(`/api/v1/runs/${id}/stream?after=x`, { method: "HEAD" })).status).toBe(400);
  });

  it("a stream whose client went away is let go by the heartbeats; one still read gets every event through [DONE]", async () => {
    const id = await submit({ steps: 3 });
    const open = (instance: unknown) => (instance as { watchers: { size: number; watchers: { beat(): void } } }).watchers;
    const watchers = () => runInDurableObject(runStub(id), (instance) => open(instance).size);
    const staying = api(`/api/v1/runs/${id}/stream`).then((r) => r.text());
    const leaving = await api(`/api/v1/runs/${id}/stream`);
    const reader = leaving.body!.getReader();
    await reader.read();
    await reader.cancel();
    // Heartbeats driven by hand: the runtime takes a first ping from the stream gone, then it holds the next unread.
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 50));
      await runInDurableObject(runStub(id), (instance) => open(instance).watchers.beat());
    }
    expect(await watchers()).toBe(1);
    await drive(id);
    const events = parseSse(await staying).filter((e) => e.data !== undefined);
    expect(events).toEqual(await eventLog(id));
    expect(await watchers()).toBe(0);
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

describe("GET /api/v1/runs/{id}/stream?format=named", () => {
  const named = async (id: string, query = "") => parseSse(await (await api(`/api/v1/runs/${id}/stream?format=named${query}`)).text());

  it("sends each type as its own event with the bare payload: status changes, progress, logs, output, then result; no [DONE]", async () => {
    const id = await submit({ steps: 2 }, { prompt: "named" });
    await drive(id);
    const events = await named(id);
    expect(events.some((e) => e.data === "[DONE]")).toBe(false);
    const statuses = events.filter((e) => e.event === "status").map((e) => JSON.parse(e.data));
    expect(statuses).toEqual(["queued", "running", "succeeded"].map((status) => ({ status, job_id: id })));
    expect(events.filter((e) => e.event === "progress").map((e) => JSON.parse(e.data))).toContainEqual({ percentage: 50, step: 1, current_step: "step_1" });
    expect(events.filter((e) => e.event === "output").map((e) => JSON.parse(e.data).delta).join("")).toBe(
      "Step 1/2 (step_1): simulated answer to: named\nStep 2/2 (step_2): simulated answer to: named\n",
    );
    expect(events.filter((e) => e.event === "log").map((e) => JSON.parse(e.data))).toContainEqual({ message: "Job started" });
    expect(events.at(-1)).toEqual({
      id: null,
      event: "result",
      data: JSON.stringify({
        status: "succeeded",
        result: "Step 1/2 (step_1): simulated answer to: named\nStep 2/2 (step_2): simulated answer to: named\n",
        result_url: `http://localhost/api/v1/runs/${id}/output`,
        error: null,
      }),
    });
    // Every event but the result carries the log's id, the same ids as the default format's.
    const ids = events.filter((e) => e.id !== null).map((e) => e.id!);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids)).toEqual(new Set((await eventLog(id)).filter((e) => e.id !== null).map((e) => e.id!)));
  });

  it("resumes like the default format: after any id, exactly what followed it", async () => {
    const id = await submit({ steps: 2 });
    await drive(id);
    const all = await named(id);
    const lastIds = all.filter((e) => e.id !== null).map((e) => e.id!);
    for (const after of lastIds) {
      const rest = await named(id, `&after=${after}`);
      const start = all.findIndex((e) => e.id === after) + 1;
      expect(rest).toEqual(all.slice(start));
    }
  });

  it("a failed job's result has its error; an output over 16 KiB is not inline", async () => {
    const failed = await submit({ steps: 2, fail_at_step: 2 });
    await drive(failed);
    expect(JSON.parse((await named(failed)).at(-1)!.data)).toMatchObject({ status: "failed", result: null, error: "Simulated failure at step 2 of 2" });
    const big = await submit({ steps: 1, output_bytes: 17 * 1024 });
    await drive(big);
    expect(JSON.parse((await named(big)).at(-1)!.data)).toMatchObject({ status: "succeeded", result: null, error: null });
  });

  it("a watcher connected before the job starts receives the same events live", async () => {
    const id = await submit({ steps: 2 });
    const early = api(`/api/v1/runs/${id}/stream?format=named`).then((r) => r.text());
    await drive(id);
    expect(parseSse(await early)).toEqual(await named(id));
  });

  it("a job awaiting input: its status, then input_required with the request", async () => {
    const id = await submit({ steps: 2, input_at_step: 1 });
    const job = await driveTo(id, "awaiting_input");
    const res = await api(`/api/v1/runs/${id}/stream?format=named`);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("event: input_required")) text += (await reader.read()).value;
    await reader.cancel();
    const events = parseSse(text);
    expect(events.filter((e) => e.event === "status").map((e) => JSON.parse(e.data).status)).toEqual(["queued", "running", "awaiting_input"]);
    expect(JSON.parse(events.find((e) => e.event === "input_required")!.data)).toEqual(job.input_request);
  });

  it("an unknown format → 422", async () => {
    const id = await submit();
    expect((await api(`/api/v1/runs/${id}/stream?format=xml`)).status).toBe(422);
  });
});
