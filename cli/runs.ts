#!/usr/bin/env node
/**
 * `runs`: the runs API from a terminal. Exit codes: 0 done (a job that succeeded), 1 the job
 * failed or was cancelled, 2 usage, 3 the API refused (4xx), 4 not found, 5 server or network,
 * 6 the job awaits a person's input (`runs input`).
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { RunsApiError, RunsClient, type BulkInput, type BulkProgress, type Job, type RetryInput, type RunFilter, type Status, type TokenInput } from "../client/index";

const USAGE = `usage: runs <command> [options]

commands:
  submit <prompt>       submit a job   [--agent-file F | --agent-yaml PATH | --recipe NAME] [--config JSON] [--timeout S]
                                       [--session ID] [--tag T ...] [--metadata K=V ...] [--webhook URL] [--idempotency-key K]
                                       [--priority 0-9] [--concurrency-key K] [--delay S | --start-after TIME] [--queue-ttl S]
                                       [--input-timeout S] [--retention S] [--wait]
  status <id>           the job
  result <id>           its result (exit 1 if it failed or was cancelled)
  list                  jobs, newest first   [--status S] [--session ID] [--tag T ...] [--metadata K=V ...] [--limit N]
  watch                 the tenant's live feed of changes   [--status S] [--session ID] [--tag T ...] [--metadata K=V ...]
  token                 mint a scoped token for a browser   --scopes read,stream,... [--runs ID,...] [--session ID]
                                       [--tag T ...] [--ttl S] [--max-submits N] [--concurrency-key K] [--priority 0-9]
                                       [--config JSON: model settings its jobs run with] [--metadata K=V ...: entries its jobs carry]
                                       [--agent file:F | recipe:NAME: the agent its jobs run]
  stream <id>           live events until the job ends   [--after N]
  wait <id>             wait until the job ends or asks for input (exit 6), with a progress bar
  input <id>            answer a job awaiting input: --approve [--note TEXT] | --revise TEXT | --reject TEXT
  retry <id>            retry a failed or cancelled job as a new one   [--from-step N] [--prompt TEXT] [--config JSON: keys that
                                       replace the old job's] [--idempotency-key K] [--wait]
  cancel <id>           cancel a queued or running job
  delete <id>           delete a finished job   [--force: cancel it first]
  bulk-cancel           cancel many jobs in the background (API key only)   [--status S] [--session ID] [--tag T ...] [--metadata K=V ...]
                                       [--before TIME] | --ids ID,...   [--wait]
  bulk-delete           delete many finished jobs (API key only)   as bulk-cancel   [--force: cancel unfinished ones first]
  bulk <bulk_id>        a bulk operation's progress   [--wait]
  stats                 the tenant's jobs by status and its token usage (API key only)

options: --api-url URL (default $RUNS_API_URL or http://127.0.0.1:8005), --json
the API key (or a scoped token) is read from $RUNS_API_KEY`;

const EXIT = { ok: 0, jobFailed: 1, usage: 2, refused: 3, notFound: 4, server: 5, awaitingInput: 6 } as const;

class UsageError extends Error {}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    tokens: true,
    options: {
      "api-url": { type: "string" },
      json: { type: "boolean", default: false },
      "agent-file": { type: "string" },
      "agent-yaml": { type: "string" },
      recipe: { type: "string" },
      agent: { type: "string" },
      config: { type: "string" },
      prompt: { type: "string" },
      timeout: { type: "string" },
      session: { type: "string" },
      tag: { type: "string", multiple: true },
      metadata: { type: "string", multiple: true },
      scopes: { type: "string" },
      runs: { type: "string" },
      ttl: { type: "string" },
      "max-submits": { type: "string" },
      before: { type: "string" },
      ids: { type: "string" },
      webhook: { type: "string" },
      "idempotency-key": { type: "string" },
      "from-step": { type: "string" },
      priority: { type: "string" },
      "concurrency-key": { type: "string" },
      delay: { type: "string" },
      "start-after": { type: "string" },
      "queue-ttl": { type: "string" },
      "input-timeout": { type: "string" },
      retention: { type: "string" },
      wait: { type: "boolean", default: false },
      status: { type: "string" },
      limit: { type: "string" },
      after: { type: "string" },
      force: { type: "boolean", default: false },
      approve: { type: "boolean", default: false },
      note: { type: "string" },
      revise: { type: "string" },
      reject: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
}

/** The options each command reads (besides --api-url, --json and --help): any other is a usage error, never ignored. */
const COMMAND_OPTIONS: Record<string, string[]> = {
  submit: ["agent-file", "agent-yaml", "recipe", "config", "timeout", "session", "tag", "metadata", "webhook", "idempotency-key", "priority", "concurrency-key", "delay", "start-after", "queue-ttl", "input-timeout", "retention", "wait"],
  status: [],
  result: [],
  list: ["status", "session", "tag", "metadata", "limit"],
  watch: ["status", "session", "tag", "metadata"],
  token: ["scopes", "runs", "session", "tag", "ttl", "max-submits", "concurrency-key", "priority", "config", "agent", "metadata"],
  stream: ["after"],
  wait: [],
  input: ["approve", "note", "revise", "reject"],
  retry: ["from-step", "prompt", "config", "idempotency-key", "wait"],
  cancel: [],
  delete: ["force"],
  "bulk-cancel": ["status", "session", "tag", "metadata", "before", "ids", "wait"],
  "bulk-delete": ["status", "session", "tag", "metadata", "before", "ids", "force", "wait"],
  bulk: ["wait"],
  stats: [],
};
const GLOBAL_OPTIONS = ["api-url", "json", "help"];

/** Refuses an option given to a command that does not read it (`submit --status failed`, say). */
function onlyOptionsOf(command: string, tokens: ReturnType<typeof parse>["tokens"]) {
  const allowed = COMMAND_OPTIONS[command];
  if (!allowed) return;
  for (const token of tokens ?? []) {
    if (token.kind === "option" && !allowed.includes(token.name) && !GLOBAL_OPTIONS.includes(token.name)) {
      throw new UsageError(`--${token.name} is not an option of ${command}`);
    }
  }
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

function need(value: string | undefined, what: string): string {
  if (!value) throw new UsageError(`missing ${what}`);
  return value;
}

function integer(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new UsageError(`${what} must be a whole number`);
  return n;
}

/** A JSON object option, or undefined when it is not given. */
function jsonOption(value: string | undefined, what: string): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new UsageError(`${what} must be JSON`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new UsageError(`${what} must be a JSON object`);
  return parsed as Record<string, unknown>;
}

/** `--metadata KEY=VALUE ...` as an object, or undefined when none is given. */
function metadataOf(entries: string[] | undefined): Record<string, string> | undefined {
  const metadata: Record<string, string> = {};
  for (const entry of entries ?? []) {
    const eq = entry.indexOf("=");
    if (eq < 1) throw new UsageError("--metadata takes KEY=VALUE");
    metadata[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return Object.keys(metadata).length > 0 ? metadata : undefined;
}

/** The filter of `list` and `watch` from the options. */
function filterOf(o: ReturnType<typeof parse>["values"]): RunFilter {
  return {
    status: o.status as Status | undefined,
    session_id: o.session,
    tags: o.tag,
    metadata: metadataOf(o.metadata),
  };
}

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
  console.log(json ? JSON.stringify(job) : `${job.job_id} ${job.status}${job.error ? `: ${job.error}` : ""}`);
  return endCode(job);
}

async function main(argv: string[]): Promise<number> {
  const { values: o, positionals, tokens } = parse(argv);
  const [command, arg] = positionals;
  if (o.help || command === "help") {
    console.log(USAGE);
    return EXIT.ok;
  }
  if (!command) {
    console.error(USAGE);
    return EXIT.usage;
  }
  onlyOptionsOf(command, tokens);
  const client = new RunsClient({ baseUrl: o["api-url"] ?? process.env.RUNS_API_URL, apiKey: process.env.RUNS_API_KEY });
  const print = (value: unknown, text: string) => console.log(o.json ? JSON.stringify(value) : text);

  switch (command) {
    case "submit": {
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
      print(submitted, `${submitted.job_id} ${submitted.status}${submitted.replayed ? " (replayed)" : ""}`);
      return o.wait ? waitFor(client, submitted.job_id, o.json) : EXIT.ok;
    }
    case "status": {
      const job = await client.get(need(arg, "job id"));
      print(job, bar(job));
      return EXIT.ok;
    }
    case "result": {
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
    case "list": {
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
    case "watch": {
      for await (const event of client.watch(filterOf(o))) {
        if (o.json) console.log(JSON.stringify(event));
        else if (event.event === "run") console.log(`${event.id}  ${event.job.job_id}  ${bar(event.job)}`);
        else if (event.event === "deleted") console.log(`${event.id}  ${event.job_id}  deleted`);
        else console.log(`${event.id}  reset: list again`);
      }
      return EXIT.ok;
    }
    case "token": {
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
    case "stream": {
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
    case "wait":
      return waitFor(client, need(arg, "job id"), o.json);
    case "input": {
      const id = need(arg, "job id");
      const chosen = [o.approve && "approve", o.revise !== undefined && "revise", o.reject !== undefined && "reject"].filter(Boolean);
      if (chosen.length !== 1) throw new UsageError("give exactly one of --approve, --revise TEXT, --reject TEXT");
      const answer =
        o.approve ? { action: "approve" as const, input: o.note } : o.revise !== undefined ? { action: "revise" as const, input: o.revise } : { action: "reject" as const, input: o.reject };
      const job = await client.input(id, answer);
      print(job, `${job.job_id} ${job.status}${job.error ? `: ${job.error}` : ""}`);
      return EXIT.ok;
    }
    case "retry": {
      const fromStep = o["from-step"] === undefined ? undefined : Number(o["from-step"]);
      if (fromStep !== undefined && !(Number.isInteger(fromStep) && fromStep >= 1)) throw new UsageError("--from-step must be a positive integer");
      const body = { from_step: fromStep, prompt: o.prompt, config: jsonOption(o.config, "--config") as RetryInput["config"] };
      const retried = await client.retry(need(arg, "job id"), body, { idempotencyKey: o["idempotency-key"] });
      print(retried, `${retried.job_id} ${retried.status}${retried.replayed ? " (replayed)" : ""}`);
      return o.wait ? waitFor(client, retried.job_id, o.json) : EXIT.ok;
    }
    case "cancel": {
      const job = await client.cancel(need(arg, "job id"));
      print(job, `${job.job_id} ${job.status}`);
      return EXIT.ok;
    }
    case "delete": {
      const id = need(arg, "job id");
      await client.delete(id, { force: o.force });
      print({ job_id: id, deleted: true }, `${id} deleted`);
      return EXIT.ok;
    }
    case "bulk-cancel":
    case "bulk-delete": {
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
    case "bulk": {
      const id = need(arg, "bulk id");
      if (o.wait) return bulkWait(client, id, o.json);
      const progress = await client.bulkProgress(id);
      print(progress, progressLine(progress));
      return EXIT.ok;
    }
    case "stats": {
      const stats = await client.stats();
      const counts = Object.entries(stats.by_status).map(([status, n]) => `${status} ${n}`);
      print(stats, `${stats.total_jobs} jobs: ${counts.join(", ")}; ${stats.usage.total_tokens} tokens in ${stats.usage.model_calls} model calls`);
      return EXIT.ok;
    }
    default:
      throw new UsageError(`unknown command: ${command}`);
  }
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

/** A refusal's `detail` for a terminal: a validation error (FastAPI's shape) one line per field. */
function detailText(detail: unknown): string {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.every((d) => typeof d?.msg === "string" && Array.isArray(d.loc))) {
    return detail
      .map((d: { loc: (string | number)[]; msg: string }) => {
        const field = d.loc.slice(d.loc[0] === "body" || d.loc[0] === "query" ? 1 : 0).join(".");
        return field ? `${field}: ${d.msg}` : d.msg;
      })
      .join("\n");
  }
  return JSON.stringify(detail);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const parseError = error instanceof Error && String((error as { code?: string }).code).startsWith("ERR_PARSE_ARGS");
    if (error instanceof UsageError || parseError) {
      console.error(`${(error as Error).message}\n\n${USAGE}`);
      process.exit(EXIT.usage);
    }
    if (error instanceof RunsApiError) {
      // An answer without the API's `detail` came from something in between (a gateway): its status says where.
      console.error(error.body.detail === undefined ? error.message : detailText(error.detail));
      process.exit(error.status === 404 ? EXIT.notFound : error.status >= 500 ? EXIT.server : EXIT.refused);
    }
    console.error(errorText(error));
    process.exit(EXIT.server);
  },
);

/** What went wrong, and why: a request that reached no server says only "fetch failed", its cause why (`connect ECONNREFUSED 127.0.0.1:8005`). */
function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause as { message?: unknown; code?: unknown } | undefined;
  const why = [cause?.message, cause?.code].find((s): s is string => typeof s === "string" && s !== "");
  return why === undefined ? error.message : `${error.message}: ${why}`;
}
