/**
 * Random sequences of submits (with priority, concurrency key, delay and queue TTL), cancels,
 * job ends, delays and TTLs running out, and the line's alarm, checked against a model of the
 * line: who runs, who waits, who is refused, and the line's own counts, after every step.
 */
import { runInDurableObject } from "cloudflare:test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Status } from "../../src/run/transitions";
import { api, drive, getJob, lineStub, post, settle } from "../helpers";
import { fireLine, KEY_LIMIT, LIMIT, lineCounts, QUEUED_LIMIT } from "./line";

interface ModelJob {
  id: string;
  seq: number;
  priority: number;
  key: string | null;
  status: Status;
  /** Queued, and its delay has not run out (it holds no place in the running order yet). */
  delayed: boolean;
  /** Delayed, and its time has come: it joins the line at the line's next alarm. */
  due: boolean;
  ttl: boolean;
  /** Its TTL has run out: it fails at the line's next alarm. */
  expired: boolean;
  error?: string;
}
interface Model {
  jobs: ModelJob[];
  seq: number;
}

const running = (m: Model) => m.jobs.filter((j) => j.status === "running");
const waiting = (m: Model) => m.jobs.filter((j) => j.status === "queued" && !j.delayed);
const blocked = (m: Model) => new Set([...new Set(running(m).map((j) => j.key))].filter((k) => k !== null && running(m).filter((j) => j.key === k).length >= KEY_LIMIT));
/** The waiting job the line would start next, by priority then arrival, skipping keys at their limit. */
function nextInLine(m: Model): ModelJob | undefined {
  const keys = blocked(m);
  return waiting(m)
    .filter((j) => j.key === null || !keys.has(j.key))
    .sort((a, b) => b.priority - a.priority || a.seq - b.seq)[0];
}

async function check(m: Model) {
  for (const job of m.jobs) {
    const real = await getJob(job.id);
    expect(real.status, job.id).toBe(job.status);
    if (job.error) expect(real.error).toBe(job.error);
  }
  expect(running(m).length).toBeLessThanOrEqual(LIMIT);
  for (const key of new Set(running(m).map((j) => j.key))) {
    if (key !== null) expect(running(m).filter((j) => j.key === key).length).toBeLessThanOrEqual(KEY_LIMIT);
  }
  const counts = await lineCounts();
  expect(counts.running).toBe(running(m).length);
  expect(counts.waiting).toBe(waiting(m).length);
  expect(counts.scheduled).toBe(m.jobs.filter((j) => j.status === "queued" && j.delayed).length);
}

class Submit implements fc.AsyncCommand<Model, unknown> {
  constructor(
    readonly priority: number,
    readonly key: string | null,
    readonly delayed: boolean,
    readonly ttl: boolean,
  ) {}
  check = () => true;
  async run(m: Model) {
    const res = await post("/api/v1/runs", {
      prompt: "model",
      priority: this.priority,
      ...(this.key ? { concurrency_key: this.key } : {}),
      ...(this.delayed ? { delay_seconds: 3600 } : {}),
      ...(this.ttl ? { queue_ttl_seconds: 3600 } : {}),
      config: { simulate: { steps: 1, step_ms: 1 } },
    });
    const first = nextInLine(m);
    const startsNow =
      !this.delayed &&
      running(m).length < LIMIT &&
      !(this.key !== null && blocked(m).has(this.key)) &&
      (!first || first.priority < this.priority);
    const queued = m.jobs.filter((j) => j.status === "queued").length;
    if (!startsNow && queued >= QUEUED_LIMIT) {
      expect(res.status).toBe(429);
      return check(m);
    }
    expect(res.status).toBe(202);
    const { job_id, status } = await res.json<{ job_id: string; status: Status }>();
    expect(status).toBe(startsNow ? "running" : "queued");
    m.jobs.push({ id: job_id, seq: ++m.seq, priority: this.priority, key: this.key, status, delayed: this.delayed, due: false, ttl: this.ttl, expired: false });
    await check(m);
  }
  toString = () => `submit(p${this.priority}, ${this.key}, ${this.delayed ? "delayed" : "now"}${this.ttl ? ", ttl" : ""})`;
}

/** Cancels a job and lets it tell the line (its alarm delivers what it owes). */
class Cancel implements fc.AsyncCommand<Model, unknown> {
  constructor(readonly n: number) {}
  check = (m: Readonly<Model>) => m.jobs.some((j) => j.status === "queued" || j.status === "running");
  async run(m: Model) {
    const live = m.jobs.filter((j) => j.status === "queued" || j.status === "running");
    const job = live[this.n % live.length];
    expect((await api(`/api/v1/runs/${job.id}/cancel`, { method: "POST" })).status).toBe(200);
    await settle(job.id);
    job.status = "cancelled";
    await check(m);
  }
  toString = () => `cancel(${this.n})`;
}

/** A running job runs to its end. */
class Finish implements fc.AsyncCommand<Model, unknown> {
  constructor(readonly n: number) {}
  check = (m: Readonly<Model>) => m.jobs.some((j) => j.status === "running");
  async run(m: Model) {
    const live = running(m);
    const job = live[this.n % live.length];
    expect((await drive(job.id)).status).toBe("succeeded");
    job.status = "succeeded";
    await check(m);
  }
  toString = () => `finish(${this.n})`;
}

/** Time passes for one queued job: its delay or its TTL runs out (as the line's clock will see it). */
class TimePasses implements fc.AsyncCommand<Model, unknown> {
  constructor(
    readonly n: number,
    readonly what: "delay" | "ttl",
  ) {}
  check = (m: Readonly<Model>) => m.jobs.some((j) => this.candidate(j));
  private candidate(j: ModelJob) {
    return j.status === "queued" && (this.what === "delay" ? j.delayed && !j.due : j.ttl && !j.expired);
  }
  async run(m: Model) {
    const jobs = m.jobs.filter((j) => this.candidate(j));
    const job = jobs[this.n % jobs.length];
    const column = this.what === "delay" ? "start_at" : "expires_at";
    await runInDurableObject(lineStub(), (_i, state) => void state.storage.sql.exec(`UPDATE places SET ${column} = 1 WHERE job_id = ?`, job.id));
    if (this.what === "delay") job.due = true;
    else job.expired = true;
    await check(m);
  }
  toString = () => `${this.what} runs out(${this.n})`;
}

/** The line's alarm: due delays join the line, TTLs passed fail, free slots are granted in order. */
class LineAlarm implements fc.AsyncCommand<Model, unknown> {
  check = () => true;
  async run(m: Model) {
    await fireLine();
    for (const job of m.jobs.filter((j) => j.status === "queued" && j.delayed && j.due)) job.delayed = false;
    for (const job of m.jobs.filter((j) => j.status === "queued" && j.expired)) {
      job.status = "failed";
      job.error = "Expired: not started within 3600 s";
    }
    for (let next = nextInLine(m); next && running(m).length < LIMIT; next = nextInLine(m)) next.status = "running";
    await check(m);
  }
  toString = () => "line alarm";
}

describe("model-based: the line under random sequences", () => {
  it("holds for every sequence", async () => {
    const n = fc.nat(20);
    const commands = [
      fc.tuple(fc.integer({ min: 0, max: 9 }), fc.constantFrom(null, "a", "b"), fc.boolean(), fc.boolean()).map(([p, k, d, t]) => new Submit(p, k, d, t)),
      fc.tuple(fc.integer({ min: 0, max: 9 }), fc.constantFrom(null, "a", "b")).map(([p, k]) => new Submit(p, k, false, false)),
      n.map((i) => new Cancel(i)),
      n.map((i) => new Finish(i)),
      fc.tuple(n, fc.constantFrom("delay" as const, "ttl" as const)).map(([i, what]) => new TimePasses(i, what)),
      fc.constant(new LineAlarm()),
    ];
    let executed = 0;
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 30, size: "large" }), async (cmds) => {
        const model: Model = { jobs: [], seq: 0 };
        try {
          await fc.asyncModelRun(() => ({ model, real: {} }), cmds);
          executed += [...cmds].length;
        } finally {
          // The next sequence starts with an empty line.
          for (const job of model.jobs.filter((j) => j.status === "queued" || j.status === "running")) {
            await api(`/api/v1/runs/${job.id}/cancel`, { method: "POST" });
            await settle(job.id);
          }
          await fireLine();
        }
      }),
      { numRuns: 50 },
    );
    // The sequences did run (their lengths are random: about 15 commands each on average).
    expect(executed).toBeGreaterThan(300);
  }, 180_000);
});
