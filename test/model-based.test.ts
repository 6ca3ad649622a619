/**
 * Random sequences of create (some jobs asking a person for input), get, list, cancel, delete,
 * forced delete, step completion (the alarm), answers to requests for input and eviction,
 * checked against a small in-memory model of the contract.
 */
import { abortAllDurableObjects, runDurableObjectAlarm } from "cloudflare:test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { transition, isTerminal, type Status } from "../src/run/transitions";
import { api, eventLog, lineStub, post, r2Keys, runStub, storedTables } from "./helpers";

interface ModelJob {
  id: string;
  status: Status;
  /** Every status it has had: the projection, fed by the job's outbox, may still show an earlier one. */
  seen: Status[];
  deleted: boolean;
}
interface Model {
  jobs: ModelJob[];
}
interface Real {
  session: string;
}

function setStatus(job: ModelJob, status: Status) {
  job.status = status;
  if (!job.seen.includes(status)) job.seen.push(status);
}

const pick = (model: Model, n: number) => (model.jobs.length ? model.jobs[n % model.jobs.length] : null);

/** After every command: what the job must look like, deleted or not. */
async function checkJob(job: ModelJob) {
  if (job.deleted) {
    expect((await api(`/api/v1/runs/${job.id}`)).status).toBe(404);
    expect(await r2Keys(`runs/default/${job.id}/`)).toEqual([]);
    expect(await storedTables(job.id)).toEqual([]);
    return;
  }
  const res = await api(`/api/v1/runs/${job.id}`);
  expect(res.status).toBe(200);
  expect((await res.json<{ status: Status }>()).status).toBe(job.status);
  if (isTerminal(job.status)) {
    const completes = (await eventLog(job.id)).filter((e) => e.event === "complete");
    expect(completes).toHaveLength(1); // exactly one terminal transition, recorded once
    expect(JSON.parse(completes[0].data).data.status).toBe(job.status);
  }
}

class Create implements fc.AsyncCommand<Model, Real> {
  constructor(readonly asks = false) {}
  check = () => true;
  async run(model: Model, real: Real) {
    const simulate = { steps: 2, step_ms: 1, ...(this.asks ? { input_at_step: 1 } : {}) };
    const res = await post("/api/v1/runs", { prompt: "model", session_id: real.session, config: { simulate } });
    expect(res.status).toBe(202);
    const { job_id, status } = await res.json<{ job_id: string; status: Status }>();
    // Running at once when the tenant has a free slot; queued otherwise.
    expect(["queued", "running"]).toContain(status);
    model.jobs.push({ id: job_id, status, seen: status === "running" ? ["queued", "running"] : ["queued"], deleted: false });
  }
  toString = () => (this.asks ? "create(asks)" : "create");
}

class Alarm implements fc.AsyncCommand<Model, Real> {
  constructor(readonly n: number) {}
  check = (m: Readonly<Model>) => m.jobs.length > 0;
  async run(model: Model) {
    const job = pick(model, this.n)!;
    await runDurableObjectAlarm(runStub(job.id));
    // An answered job has told the line it waits again: the line's alarm may start it.
    if (job.status === "queued") await runDurableObjectAlarm(lineStub());
    if (job.deleted) return checkJob(job);
    const now = (await (await api(`/api/v1/runs/${job.id}`)).json<{ status: Status }>()).status;
    // A step may start the job, finish it, stop it for input, or (waiting for a slot or for a
    // person) change nothing.
    const legal = new Set<Status>([job.status]);
    const started = transition(job.status, "start");
    if (started) legal.add(started);
    for (const from of [...legal]) {
      for (const action of ["succeed", "ask"] as const) {
        const next = transition(from, action);
        if (next) legal.add(next);
      }
    }
    expect(legal.has(now)).toBe(true);
    setStatus(job, now);
    await checkJob(job);
  }
  toString = () => `alarm(${this.n})`;
}

class Cancel implements fc.AsyncCommand<Model, Real> {
  constructor(readonly n: number) {}
  check = (m: Readonly<Model>) => m.jobs.length > 0;
  async run(model: Model) {
    const job = pick(model, this.n)!;
    const res = await api(`/api/v1/runs/${job.id}/cancel`, { method: "POST" });
    if (job.deleted) expect(res.status).toBe(404);
    else if (isTerminal(job.status)) expect(res.status).toBe(400);
    else {
      expect(res.status).toBe(200);
      setStatus(job, "cancelled");
    }
    await checkJob(job);
  }
  toString = () => `cancel(${this.n})`;
}

class Delete implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly n: number,
    readonly force: boolean,
  ) {}
  check = (m: Readonly<Model>) => m.jobs.length > 0;
  async run(model: Model) {
    const job = pick(model, this.n)!;
    const res = await api(`/api/v1/runs/${job.id}${this.force ? "?force=true" : ""}`, { method: "DELETE" });
    if (job.deleted) expect(res.status).toBe(404);
    else if (!isTerminal(job.status) && !this.force) expect(res.status).toBe(400);
    else {
      expect(res.status).toBe(204);
      job.deleted = true;
    }
    await checkJob(job);
  }
  toString = () => `delete(${this.n}${this.force ? ", force" : ""})`;
}

class Answer implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly n: number,
    readonly action: "approve" | "revise" | "reject",
  ) {}
  check = (m: Readonly<Model>) => m.jobs.length > 0;
  async run(model: Model) {
    const job = pick(model, this.n)!;
    const res = await post(`/api/v1/runs/${job.id}/input`, { action: this.action, input: "a person's words" });
    if (job.deleted) expect(res.status).toBe(404);
    else if (job.status !== "awaiting_input") {
      expect(res.status).toBe(409);
      expect(await res.json()).toEqual({ detail: `Job is not awaiting input. Current status: ${job.status}` });
    } else {
      expect(res.status).toBe(200);
      const { status } = await res.json<{ status: Status }>();
      // Answered: it waits for a slot again (and may get one at once), or a rejection fails it.
      expect(status).toBe(this.action === "reject" ? transition(job.status, "fail") : transition(job.status, "answer"));
      setStatus(job, status);
    }
    await checkJob(job);
  }
  toString = () => `answer(${this.n}, ${this.action})`;
}

class List implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(model: Model, real: Real) {
    const body = await (await api(`/api/v1/runs?session_id=${real.session}&page_size=100`)).json<{ jobs: { job_id: string; status: Status }[]; total: number }>();
    const live = model.jobs.filter((j) => !j.deleted);
    // Membership and order are exact (a submit registers its job, a delete removes it); a status
    // may lag behind the job's own by what its outbox has yet to deliver.
    expect(body.total).toBe(live.length);
    expect(body.jobs.map((j) => j.job_id)).toEqual([...live].reverse().map((j) => j.id));
    body.jobs.forEach((listed, i) => expect([...live].reverse()[i].seen).toContain(listed.status));
    for (const status of new Set(body.jobs.map((j) => j.status))) {
      const filtered = await (await api(`/api/v1/runs?session_id=${real.session}&status=${status}`)).json<{ total: number }>();
      expect(filtered.total).toBe(body.jobs.filter((j) => j.status === status).length);
    }
  }
  toString = () => "list";
}

class Evict implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  async run(model: Model) {
    await abortAllDurableObjects();
    for (const job of model.jobs) await checkJob(job);
  }
  toString = () => "evict";
}

describe("model-based: the contract under random sequences", () => {
  it("holds for every sequence", async () => {
    const index = fc.nat(20);
    const commands = [
      fc.constant(new Create()),
      fc.constant(new Create(true)),
      index.map((n) => new Alarm(n)),
      index.map((n) => new Alarm(n)),
      index.map((n) => new Cancel(n)),
      fc.tuple(index, fc.constantFrom("approve" as const, "revise" as const, "reject" as const)).map(([n, action]) => new Answer(n, action)),
      fc.tuple(index, fc.boolean()).map(([n, force]) => new Delete(n, force)),
      fc.constant(new List()),
      fc.constant(new Evict()),
    ];
    let run = 0;
    let executed = 0;
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 40, size: "large" }), async (cmds) => {
        const real = { session: `model-${Date.now()}-${++run}` };
        await fc.asyncModelRun(() => ({ model: { jobs: [] }, real }), cmds);
        executed += [...cmds].length;
      }),
      { numRuns: 50 },
    );
    expect(executed).toBeGreaterThan(500);
  }, 120_000);
});
