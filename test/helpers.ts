/** Shared test helpers: requests through the real Worker, alarms driven by hand. */
import { env, runDurableObjectAlarm, runInDurableObject, SELF } from "cloudflare:test";
import type { Job } from "../src/schemas";

export const BASE = "http://localhost";

export function api(path: string, init?: RequestInit): Promise<Response> {
  return SELF.fetch(`${BASE}${path}`, init);
}

export function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return api(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

export interface Simulate {
  steps?: number;
  step_ms?: number;
  output_bytes?: number;
  fail_at_step?: number;
  input_at_step?: number;
}

/** Submits a simulated job and returns its id. */
export async function submit(simulate: Simulate = {}, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await post("/api/v1/runs", { prompt: "test prompt", config: { simulate: { step_ms: 1, ...simulate } }, ...extra });
  if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { job_id: string }).job_id;
}

/** Every endpoint that names one job, as [method, path suffix]. */
export const JOB_ENDPOINTS = [
  ["GET", ""],
  ["GET", "/result"],
  ["GET", "/output"],
  ["GET", "/stream"],
  ["POST", "/cancel"],
  ["DELETE", ""],
  ["DELETE", "?force=true"],
] as const;

export function runStub(id: string, tenant = "default") {
  return env.RUNS.getByName(`${tenant}/${id}`);
}

export function lineStub(tenant = "default") {
  return env.LINES.getByName(tenant);
}

export const getJob = (id: string): Promise<Job> => jobAs(id, {});

/** The job, read with `headers` (a tenant's key, say). */
export async function jobAs(id: string, headers: Record<string, string>): Promise<Job> {
  const res = await api(`/api/v1/runs/${id}`, { headers });
  if (res.status !== 200) throw new Error(`GET answered ${res.status}: ${await res.text()}`);
  return res.json();
}

const TERMINAL = ["succeeded", "failed", "cancelled"];

/**
 * Fires the job's alarm until it reaches a terminal status (bounded). Between alarms it pauses
 * briefly, so that a retry scheduled a moment ahead (a backoff, a Retry-After) comes due.
 */
export async function drive(id: string, maxAlarms = 200): Promise<Job> {
  for (let i = 0; i < maxAlarms; i++) {
    const job = await getJob(id);
    if (TERMINAL.includes(job.status)) return job;
    // A queued job starts when the tenant's line tells it.
    if (job.status === "queued") await runDurableObjectAlarm(lineStub());
    await runDurableObjectAlarm(runStub(id));
    if (i > 0) await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`job ${id} did not finish within ${maxAlarms} alarms`);
}

/**
 * Fires the job's alarm (and, while it waits for a slot, the line's) until it has `status`: for a
 * status that is not terminal, such as `awaiting_input`. `as`: the tenant's job, read with its key.
 */
export async function driveTo(id: string, status: Job["status"], maxAlarms = 50, as = { tenant: "default", headers: {} as Record<string, string> }): Promise<Job> {
  for (let i = 0; i < maxAlarms; i++) {
    const job = await jobAs(id, as.headers);
    if (job.status === status) return job;
    if (job.status === "queued") await runDurableObjectAlarm(lineStub(as.tenant));
    await runDurableObjectAlarm(runStub(id, as.tenant));
  }
  throw new Error(`job ${id} did not reach ${status} within ${maxAlarms} alarms`);
}

/** Fires the job's alarm: what it owes others (its outbox) goes out, and its next step runs. */
export async function settle(id: string): Promise<void> {
  await runDurableObjectAlarm(runStub(id));
}

/** Submits a job that stays queued: it may start only in an hour. */
export function submitQueued(simulate: Simulate = {}, extra: Record<string, unknown> = {}): Promise<string> {
  return submit(simulate, { delay_seconds: 3600, ...extra });
}

/** Submits a job and drives it to the end. */
export async function finished(simulate: Simulate = {}, extra: Record<string, unknown> = {}): Promise<string> {
  const id = await submit(simulate, extra);
  await drive(id);
  return id;
}

export interface ParsedEvent {
  id: number | null;
  event: string | null;
  data: string;
}

/** Parses an SSE body into its events (comments skipped). */
export function parseSse(text: string): ParsedEvent[] {
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "" && !block.startsWith(":"))
    .map((block) => {
      const event: ParsedEvent = { id: null, event: null, data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("id: ")) event.id = Number(line.slice(4));
        else if (line.startsWith("event: ")) event.event = line.slice(7);
        else if (line.startsWith("data: ")) event.data = line.slice(6);
      }
      return event;
    });
}

/** A finished job's whole event log, as its stream replays it. */
export async function eventLog(id: string, after?: number): Promise<ParsedEvent[]> {
  const res = await api(`/api/v1/runs/${id}/stream${after === undefined ? "" : `?after=${after}`}`);
  return parseSse(await res.text());
}

export async function r2Keys(prefix: string): Promise<string[]> {
  return (await env.OUTPUTS.list({ prefix })).objects.map((o) => o.key);
}

/** Every table of an object's SQLite database: a job's (by id) or any other's (by stub). */
export async function storedTables(of: string | DurableObjectStub, tenant = "default"): Promise<string[]> {
  return runInDurableObject(typeof of === "string" ? runStub(of, tenant) : of, (_instance, state) =>
    state.storage.sql
      .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
      .toArray()
      .map((r) => r.name),
  );
}

export async function waitFor<T>(probe: () => Promise<T | undefined | false>, what: string, tries = 500): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * `count` new jobs in the tenant's list, each one change of its feed, as jobs' outboxes enter
 * them: snapshots like `template` with ids of their own, each upserted into the projection that
 * `projection(i)` names, 100 calls at a time. Their ids, in the order they were made.
 */
export async function enterJobs(template: Job, count: number, projection: (i: number) => string = () => "default"): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, i) => `${template.job_id}x${i}`);
  for (let from = 0; from < count; from += 100) {
    await Promise.all(ids.slice(from, from + 100).map((job_id, k) => env.PROJECTIONS.getByName(projection(from + k)).upsert({ ...template, job_id }, 1)));
  }
  return ids;
}

/** What a stream's reader is sent until it ends or falls quiet for `quietMs`. */
export async function readUntilQuiet(reader: ReadableStreamDefaultReader<string>, quietMs = 300): Promise<string> {
  let text = "";
  for (;;) {
    const next = await Promise.race([reader.read(), new Promise<null>((resolve) => setTimeout(() => resolve(null), quietMs))]);
    if (next === null || next.done) return text;
    text += next.value;
  }
}
