/** The commands of the `runs` CLI: each with the options it reads, and what it does. */
import { readFileSync } from "node:fs";
import { RunsApiError, type BulkInput, type BulkProgress, type Job, type RetryInput, type RunsClient, type Status, type SubmitResponse, type TokenInput } from "../client/index";
import { UsageError, filterOf, integer, jsonOption, metadataOf, need, type Options } from "./options";

export const EXIT = { ok: 0, jobFailed: 1, usage: 2, refused: 3, notFound: 4, server: 5, awaitingInput: 6 } as const;

/** What a command is given: the client, the options, its argument, and how to print (JSON with --json). */
export interface Call {
  command: string;
  arg: string | undefined;
  o: Options;
  client: RunsClient;
  print: (value: unknown, text: string) => void;
}

interface Command {
  /** The options it reads (besides --api-url, --json and --help): any other is a usage error, never ignored. */
  options: string[];
  run: (call: Call) => Promise<number>;
}

const FILTER = ["status", "session", "tag", "metadata"];

export const COMMANDS: Record<string, Command> = {
  submit: {
    options: ["agent-file", "agent-yaml", "recipe", "config", "timeout", "session", "tag", "metadata", "webhook", "idempotency-key", "priority", "concurrency-key", "delay", "start-after", "queue-ttl", "input-timeout", "retention", "wait"],
    run: submit,
  },
  status: {
    options: [],
    run: async ({ arg, client, print }) => {
      const job = await client.get(need(arg, "job id"));
      print(job, bar(job));
      return EXIT.ok;
    },
  },
  result: { options: [], run: result },
  list: { options: [...FILTER, "limit"], run: list },
  watch: { options: FILTER, run: watch },
  token: { options: ["scopes", "runs", "session", "tag", "ttl", "max-submits", "concurrency-key", "priority", "config", "agent", "metadata"], run: token },
  stream: { options: ["after"], run: stream },
  wait: { options: [], run: ({ arg, client, o }) => waitFor(client, need(arg, "job id"), o.json) },
  input: { options: ["approve", "note", "revise", "reject"], run: input },
  retry: { options: ["from-step", "prompt", "config", "idempotency-key", "wait"], run: retry },
  cancel: {
    options: [],
    run: async ({ arg, client, print }) => {
      const job = await client.cancel(need(arg, "job id"));
      print(job, `${job.job_id} ${job.status}`);
      return EXIT.ok;
    },
  },
  delete: {
    options: ["force"],
    run: async ({ arg, client, o, print }) => {
      const id = need(arg, "job id");
      await client.delete(id, { force: o.force });
      print({ job_id: id, deleted: true }, `${id} deleted`);
      return EXIT.ok;
    },
  },
  "bulk-cancel": { options: [...FILTER, "before", "ids", "wait"], run: bulk },
  "bulk-delete": { options: [...FILTER, "before", "ids", "force", "wait"], run: bulk },
  bulk: {
    options: ["wait"],
    run: async ({ arg, client, o, print }) => {
      const id = need(arg, "bulk id");
      if (o.wait) return bulkWait(client, id, o.json);
      const progress = await client.bulkProgress(id);
      print(progress, progressLine(progress));
      return EXIT.ok;
    },
  },
  stats: {
    options: [],
    run: async ({ client, print }) => {
      const stats = await client.stats();
      const counts = Object.entries(stats.by_status).map(([status, n]) => `${status} ${n}`);
      print(stats, `${stats.total_jobs} jobs: ${counts.join(", ")}; ${stats.usage.total_tokens} tokens in ${stats.usage.model_calls} model calls`);
      return EXIT.ok;
    },
  },
};

async function submit({ arg, client, o, print }: Call): Promise<number> {
  const config = jsonOption(o.config, "--config");
  const submitted = await client.submit(
    {
      prompt: need(arg, "prompt"),
      agent_file: o["agent-file"],
      agent_yaml: o["agent-yaml"] ? readFileSync(o["agent-yaml"], "utf8") : undefined,
      recipe_name: o.recipe,
      config,
      timeout: integer(o.timeout, "--timeout"),
      session_id: o.session,
      tags: o.tag,
      metadata: metadataOf(o.metadata),
      webhook_url: o.webhook,
      priority: integer(o.priority, "--priority"),
      concurrency_key: o["concurrency-key"],
      delay_seconds: integer(o.delay, "--delay"),
      start_after: o["start-after"],
      queue_ttl_seconds: integer(o["queue-ttl"], "--queue-ttl"),
      input_timeout_s: integer(o["input-timeout"], "--input-timeout"),
      retention_seconds: integer(o.retention, "--retention"),
    },
    { idempotencyKey: o["idempotency-key"] },
  );
  return made({ client, o, print }, submitted);
}

async function result({ arg, client, o }: Call): Promise<number> {
  const id = need(arg, "job id");
  try {
    const result = await client.result(id);
    if (o.json) console.log(JSON.stringify(result));
    else if (result.result !== null) process.stdout.write(result.result);
    else {
      const res = await client.output(id);
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) process.stdout.write(chunk);
    }
    return EXIT.ok;
  } catch (error) {
    // A failed or cancelled job has no result: that is the job's outcome, not a usage error.
    if (error instanceof RunsApiError && error.status === 400 && /failed|cancelled/.test(String(error.detail))) {
      console.error(String(error.detail) + (error.body.error ? ` ${String(error.body.error)}` : ""));
      return EXIT.jobFailed;
    }
    throw error;
  }
}

async function list({ client, o }: Call): Promise<number> {
  const limit = o.limit ? Number(o.limit) : 20;
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError("--limit must be a positive integer");
  const jobs: Job[] = [];
  for await (const job of client.listAll({ ...filterOf(o), page_size: Math.min(limit, 100) })) {
    jobs.push(job);
    if (jobs.length >= limit) break;
  }
  if (o.json) console.log(JSON.stringify(jobs));
  else for (const job of jobs) console.log(`${job.job_id}  ${job.status.padEnd(9)}  ${job.created_at}`);
  // Said apart from the list (on stderr), so that a script reading the list reads none.
  if (!o.json && jobs.length === 0) console.error("no jobs match");
  return EXIT.ok;
}

async function watch({ client, o }: Call): Promise<number> {
  for await (const event of client.watch(filterOf(o))) {
    if (o.json) console.log(JSON.stringify(event));
    else if (event.event === "run") console.log(`${event.id}  ${event.job.job_id}  ${bar(event.job)}`);
    else if (event.event === "deleted") console.log(`${event.id}  ${event.job_id}  deleted`);
    else console.log(`${event.id}  reset: list again`);
  }
  return EXIT.ok;
}

async function token({ client, o, print }: Call): Promise<number> {
  const scopes = need(o.scopes, "--scopes").split(",").map((s) => s.trim()) as TokenInput["scopes"];
  const minted = await client.mintToken({
    scopes,
    runs: o.runs ? o.runs.split(",").map((s) => s.trim()) : undefined,
    session_id: o.session,
    tags: o.tag,
    ttl_seconds: integer(o.ttl, "--ttl"),
    max_submits: integer(o["max-submits"], "--max-submits"),
    concurrency_key: o["concurrency-key"],
    priority: integer(o.priority, "--priority"),
    config: jsonOption(o.config, "--config") as TokenInput["config"],
    agent: o.agent,
    metadata: metadataOf(o.metadata),
  });
  print(minted, minted.token);
  return EXIT.ok;
}

async function stream({ arg, client, o }: Call): Promise<number> {
  const id = need(arg, "job id");
  const progress = progressPrinter();
  for await (const event of client.stream(id, { after: integer(o.after, "--after") })) {
    if (o.json) console.log(JSON.stringify(event));
    else if (event.event === "output") process.stdout.write(String(event.data.delta));
    else if (event.event === "progress") progress.update(`${String(event.data.percentage).padStart(3)}%${event.data.current_step ? ` ${event.data.current_step}` : ""}`);
    else if (event.event === "log") progress.update(String(event.data.message));
  }
  progress.end();
  return endCode(await client.get(id));
}

async function input({ arg, client, o, print }: Call): Promise<number> {
  const id = need(arg, "job id");
  const chosen = [o.approve && "approve", o.revise !== undefined && "revise", o.reject !== undefined && "reject"].filter(Boolean);
  if (chosen.length !== 1) throw new UsageError("give exactly one of --approve, --revise TEXT, --reject TEXT");
  const answer =
    o.approve ? { action: "approve" as const, input: o.note } : o.revise !== undefined ? { action: "revise" as const, input: o.revise } : { action: "reject" as const, input: o.reject };
  const job = await client.input(id, answer);
  print(job, statusLine(job));
  return EXIT.ok;
}

async function retry({ arg, client, o, print }: Call): Promise<number> {
  const fromStep = o["from-step"] === undefined ? undefined : Number(o["from-step"]);
  if (fromStep !== undefined && !(Number.isInteger(fromStep) && fromStep >= 1)) throw new UsageError("--from-step must be a positive integer");
  const body = { from_step: fromStep, prompt: o.prompt, config: jsonOption(o.config, "--config") as RetryInput["config"] };
  const retried = await client.retry(need(arg, "job id"), body, { idempotencyKey: o["idempotency-key"] });
  return made({ client, o, print }, retried);
}

/** What a submit or a retry prints of the job it made (or found under its key), then waits for it with --wait. */
async function made({ client, o, print }: Pick<Call, "client" | "o" | "print">, job: SubmitResponse & { replayed: boolean }): Promise<number> {
  print(job, `${job.job_id} ${job.status}${job.replayed ? " (replayed)" : ""}`);
  return o.wait ? waitFor(client, job.job_id, o.json) : EXIT.ok;
}

/** `bulk-cancel` and `bulk-delete`. */
async function bulk({ command, client, o, print }: Call): Promise<number> {
  const ids = o.ids?.split(",").map((s) => s.trim()).filter(Boolean);
  // Said in the CLI's own words, where the API's would name its body's fields.
  const filtered = [o.status, o.session, o.tag, o.metadata, o.before].some((given) => given !== undefined);
  if ((ids !== undefined) === filtered) throw new UsageError("give --ids ID,..., or a filter (--status, --session, --tag, --metadata, --before), not both");
  const body: BulkInput = ids
    ? { job_ids: ids }
    : { status: o.status as Status | undefined, session_id: o.session, tags: o.tag, metadata: metadataOf(o.metadata), created_before: o.before };
  if (command === "bulk-delete" && o.force) body.force = true;
  const accepted = await client.bulk(command === "bulk-cancel" ? "cancel" : "delete", body);
  if (!o.wait) {
    print(accepted, `${accepted.bulk_id} matched ${accepted.matched}`);
    return EXIT.ok;
  }
  return bulkWait(client, accepted.bulk_id, o.json);
}

function bar(job: Job): string {
  const pct = job.progress.percentage;
  const filled = Math.round(pct / 5);
  const step = job.progress.current_step ? ` ${job.progress.current_step}` : "";
  return `[${"#".repeat(filled)}${"-".repeat(20 - filled)}] ${String(pct).padStart(3)}% ${job.status}${step}`;
}

/** Draws progress on one terminal line, or one line per change when not a terminal. */
function progressPrinter() {
  let last = "";
  return {
    update(line: string) {
      if (line === last) return;
      last = line;
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2K${line}`);
      else process.stderr.write(`${line}\n`);
    },
    end() {
      if (process.stderr.isTTY && last) process.stderr.write("\n");
    },
  };
}

/** A job's id and status, with its error if it has one. */
const statusLine = (job: Job) => `${job.job_id} ${job.status}${job.error ? `: ${job.error}` : ""}`;

const endCode = (job: Job) => (job.status === "succeeded" ? EXIT.ok : EXIT.jobFailed);

async function waitFor(client: RunsClient, id: string, json: boolean): Promise<number> {
  const progress = progressPrinter();
  const job = await client.waitForCompletion(id, { onUpdate: (j) => progress.update(bar(j)), untilInput: true });
  progress.end();
  if (job.status === "awaiting_input" && job.input_request) {
    const request = job.input_request;
    console.log(json ? JSON.stringify(job) : `${job.job_id} awaiting input at step ${request.step}: ${request.prompt}\n\n${request.output}\n\nanswer: runs input ${job.job_id} --approve | --revise TEXT | --reject TEXT`);
    return EXIT.awaitingInput;
  }
  console.log(json ? JSON.stringify(job) : statusLine(job));
  return endCode(job);
}

const progressLine = (p: BulkProgress) => `${p.bulk_id} ${p.action} ${p.state}: ${p.done} done, ${p.skipped} skipped, ${p.failed} failed of ${p.matched}`;

/** Polls a bulk operation until it is done, its progress on stderr; exit 1 when some jobs failed. */
async function bulkWait(client: RunsClient, id: string, json: boolean): Promise<number> {
  for (;;) {
    const progress = await client.bulkProgress(id);
    if (progress.state === "done") {
      console.log(json ? JSON.stringify(progress) : progressLine(progress));
      return progress.failed > 0 ? EXIT.jobFailed : EXIT.ok;
    }
    console.error(progressLine(progress));
    await new Promise((r) => setTimeout(r, 1000));
  }
}
