#!/usr/bin/env node
/**
 * `runs`: the runs API from a terminal. Exit codes: 0 done (a job that succeeded), 1 the job
 * failed or was cancelled, 2 usage, 3 the API refused (4xx), 4 not found, 5 server or network,
 * 6 the job awaits a person's input (`runs input`).
 */
import { RunsApiError, RunsClient } from "../client/index";
import { COMMANDS, EXIT } from "./commands";
import { UsageError, parse } from "./options";

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

/** The options every command takes. */
const GLOBAL_OPTIONS = ["api-url", "json", "help"];

/** Runs one command line; its exit code. */
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
  if (!Object.hasOwn(COMMANDS, command)) throw new UsageError(`unknown command: ${command}`);
  const chosen = COMMANDS[command];
  // An option given to a command that does not read it (`submit --status failed`, say) is refused, never ignored.
  for (const token of tokens ?? []) {
    if (token.kind === "option" && !chosen.options.includes(token.name) && !GLOBAL_OPTIONS.includes(token.name)) {
      throw new UsageError(`--${token.name} is not an option of ${command}`);
    }
  }
  const client = new RunsClient({ baseUrl: o["api-url"] ?? process.env.RUNS_API_URL, apiKey: process.env.RUNS_API_KEY });
  const print = (value: unknown, text: string) => console.log(o.json ? JSON.stringify(value) : text);
  return chosen.run({ command, arg, o, client, print });
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
