/** The options of the `runs` CLI, and how it reads their values. */
import { parseArgs } from "node:util";
import type { RunFilter, Status } from "../client/index";

/** A command given wrongly: said with the usage, exit 2. */
export class UsageError extends Error {}

/** The command line, with every option any command takes (each command refuses the others: commands.ts). */
export function parse(argv: string[]) {
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

/** The options given, by name. */
export type Options = ReturnType<typeof parse>["values"];

export function need(value: string | undefined, what: string): string {
  if (!value) throw new UsageError(`missing ${what}`);
  return value;
}

export function integer(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new UsageError(`${what} must be a whole number`);
  return n;
}

/** A JSON object option, or undefined when it is not given. */
export function jsonOption(value: string | undefined, what: string): Record<string, unknown> | undefined {
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
export function metadataOf(entries: string[] | undefined): Record<string, string> | undefined {
  const metadata: Record<string, string> = {};
  for (const entry of entries ?? []) {
    const eq = entry.indexOf("=");
    if (eq < 1) throw new UsageError("--metadata takes KEY=VALUE");
    metadata[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return Object.keys(metadata).length > 0 ? metadata : undefined;
}

/** The filter of `list` and `watch` from the options. */
export function filterOf(o: Options): RunFilter {
  return {
    status: o.status as Status | undefined,
    session_id: o.session,
    tags: o.tag,
    metadata: metadataOf(o.metadata),
  };
}
