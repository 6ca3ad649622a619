/** The RunObject's tables (numbered migrations, see storage/migrations.ts) and the SQL that reads and writes them. */
import { DEFAULT_INPUT_TIMEOUT_S, DEFAULT_PRIORITY } from "../schemas";
import type { OutputPart } from "../storage/blobs";
import { remakeTable } from "../storage/migrations";
import type { NewEvent, StoredEvent } from "./events";
import type { CopiedStep, RunRow, RunSpec, WebhookState } from "./job";

type Row<T> = T & Record<string, SqlStorageValue>;

/**
 * Append-only: a deployed object has run a prefix of this list, and runs the rest when it next
 * starts (test/upgrade/ checks this from every earlier version). A step is never edited or
 * removed; one that is no longer wanted is undone by a later step.
 */
/** The job's tables as they were first created; columns added since are in ADDED_COLUMNS. */
const TABLES = {
  spec: `CREATE TABLE spec (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL)`,
  run: `CREATE TABLE run (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     status TEXT NOT NULL,
     started_at INTEGER, completed_at INTEGER, cancelled_at INTEGER,
     error TEXT,
     steps_total INTEGER NOT NULL, steps_completed INTEGER NOT NULL,
     current_step TEXT,
     version INTEGER NOT NULL,
     deleted_at INTEGER, deadline_at INTEGER, expires_at INTEGER, next_step_at INTEGER)`,
  steps: `CREATE TABLE steps (
     idx INTEGER PRIMARY KEY,
     name TEXT NOT NULL,
     status TEXT NOT NULL DEFAULT 'pending',
     attempts INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     started_at INTEGER, finished_at INTEGER,
     output_key TEXT, output_bytes INTEGER, output_etag TEXT)`,
  events: `CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, data TEXT NOT NULL, at INTEGER NOT NULL)`,
  outbox: `CREATE TABLE outbox (kind TEXT PRIMARY KEY, payload TEXT NOT NULL, due_at INTEGER NOT NULL, attempts INTEGER NOT NULL)`,
  webhook: `CREATE TABLE webhook (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     message_id TEXT NOT NULL,
     state TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     last_status INTEGER, last_error TEXT, last_attempt_at INTEGER, first_attempt_at INTEGER,
     body TEXT)`,
};

/** The columns later migrations added, each table's in the order they were added. */
const ADDED_COLUMNS = {
  run: [
    // Human input: the open request and the run time left while a person answers.
    "input_request TEXT",
    "time_left_ms INTEGER",
    // Token usage: the job's totals (every model call counted, and how many of them were estimated
    // because the provider sent no usage).
    "prompt_tokens INTEGER NOT NULL DEFAULT 0",
    "completion_tokens INTEGER NOT NULL DEFAULT 0",
    "model_calls INTEGER NOT NULL DEFAULT 0",
    "estimated_calls INTEGER NOT NULL DEFAULT 0",
  ],
  steps: [
    // The person's note (approve) and the revision asked for (revise: feedback and the earlier answer).
    "note TEXT",
    "revision TEXT",
    // Each step's token usage.
    "prompt_tokens INTEGER NOT NULL DEFAULT 0",
    "completion_tokens INTEGER NOT NULL DEFAULT 0",
    "model_calls INTEGER NOT NULL DEFAULT 0",
    // The idempotency keys of the answers people gave the step, each with its body's hash: `[[key, hash], ...]`.
    "answer_keys TEXT",
  ],
};
const added = (table: keyof typeof ADDED_COLUMNS, from: number, to: number) =>
  ADDED_COLUMNS[table].slice(from, to).map((column) => `ALTER TABLE ${table} ADD COLUMN ${column}`);

/**
 * Tables made again in another shape, each as it is now. Every page a commit changes is written
 * to storage, and these shapes change fewer: the job's transitions write an event and an outbox
 * row, and a new job's object makes every table.
 */
const REMADE = {
  // Numbered without AUTOINCREMENT, so that no counter in `sqlite_sequence` is written with every
  // event. Events are never deleted one by one, so the next number is the same: one past the last.
  events: {
    ddl: `CREATE TABLE events (seq INTEGER PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL, at INTEGER NOT NULL)`,
    columns: "seq, type, data, at",
  },
  // Stored by its key alone (WITHOUT ROWID): one b-tree, where a table keyed by text is two (its
  // rows, and its key's index). An older version's statements read and write it the same.
  outbox: {
    ddl: `CREATE TABLE outbox (kind TEXT PRIMARY KEY, payload TEXT NOT NULL, due_at INTEGER NOT NULL, attempts INTEGER NOT NULL) WITHOUT ROWID`,
    columns: "kind, payload, due_at, attempts",
  },
};
/** A table made again as REMADE has it, its rows kept. */
const remade = (table: keyof typeof REMADE) => remakeTable(table, REMADE[table].ddl, REMADE[table].columns);

export const RUN_MIGRATIONS = [
  TABLES.spec,
  TABLES.run,
  TABLES.steps,
  TABLES.events,
  TABLES.outbox,
  TABLES.webhook,
  // When progress went to the projection at most once a second per kind; retired by the next step.
  `CREATE TABLE outbox_sent (kind TEXT PRIMARY KEY, at INTEGER NOT NULL)`,
  `DROP TABLE outbox_sent`,
  // Rows owed by versions before the line: the projection's kind was "index", and neither it nor
  // the purge named the tenant and the job, which the handlers now read from the row itself.
  `UPDATE outbox SET kind = 'projection', payload = json_set(payload, '$.tenant', (SELECT json_extract(body, '$.tenant') FROM spec))
   WHERE kind = 'index'`,
  `UPDATE outbox SET payload = (SELECT json_object('tenant', json_extract(body, '$.tenant'), 'job_id', json_extract(body, '$.job_id')) FROM spec)
   WHERE kind = 'purge' AND json_extract(payload, '$.job_id') IS NULL`,
  ...added("run", 0, 2),
  ...added("steps", 0, 2),
  ...added("run", 2, 6),
  ...added("steps", 2, 5),
  ...added("steps", 5, 6),
  ...remade("events"),
  ...remade("outbox"),
] as const;

/**
 * What RUN_MIGRATIONS make, for a new job's object: the same tables in six statements, each as
 * SQLite records a table whose columns were added one by one (`..., <column>)`), so that a new
 * object's schema is, to the letter, that of one migrated (test/upgrade/upgrade.test.ts compares).
 */
export const RUN_SCHEMA = Object.entries(TABLES).map(([table, first]) => {
  const ddl = REMADE[table as keyof typeof REMADE]?.ddl ?? first;
  const columns: readonly string[] = ADDED_COLUMNS[table as keyof typeof ADDED_COLUMNS] ?? [];
  return columns.length === 0 ? ddl : `${ddl.slice(0, -1)}, ${columns.join(", ")})`;
});

export function readRunRow(sql: SqlStorage): RunRow | null {
  return sql.exec<Row<RunRow>>("SELECT * FROM run WHERE id = 1").toArray()[0] ?? null;
}

/**
 * The job's row, written whole. `INSERT OR REPLACE` (the table has no triggers, and every column
 * is named) rather than an upsert naming each column twice: a new job's object prepares each
 * statement it runs afresh, and this one is the longest.
 */
export function writeRunRow(sql: SqlStorage, row: RunRow): void {
  sql.exec(
    `INSERT OR REPLACE INTO run (id, status, started_at, completed_at, cancelled_at, error, steps_total, steps_completed,
       current_step, version, deleted_at, deadline_at, expires_at, next_step_at, input_request, time_left_ms,
       prompt_tokens, completion_tokens, model_calls, estimated_calls)
     VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    row.status,
    row.started_at,
    row.completed_at,
    row.cancelled_at,
    row.error,
    row.steps_total,
    row.steps_completed,
    row.current_step,
    row.version,
    row.deleted_at,
    row.deadline_at,
    row.expires_at,
    row.next_step_at,
    row.input_request,
    row.time_left_ms,
    row.prompt_tokens,
    row.completion_tokens,
    row.model_calls,
    row.estimated_calls,
  );
}

/**
 * The job's spec. One stored by an earlier version lacks the fields added since; each is given
 * the value that version behaved as (it ran only the simulated runner, in submission order).
 */
export function readSpec(sql: SqlStorage): RunSpec {
  const stored = JSON.parse(sql.exec<{ body: string }>("SELECT body FROM spec WHERE id = 1").one().body) as Partial<RunSpec>;
  return {
    runner: "simulated",
    agent: [],
    retention_ms: null,
    priority: DEFAULT_PRIORITY,
    concurrency_key: null,
    scheduled_for: null,
    queue_ttl_s: null,
    request_id: null,
    input_timeout_s: DEFAULT_INPUT_TIMEOUT_S,
    retry_of: null,
    tags: [],
    ...stored,
  } as RunSpec;
}

/**
 * The most a job's spec may hold, as stored: it is one row, and a Durable Object's SQLite refuses a
 * row over 2 MiB (SQLITE_TOOBIG). An agent's role, goal and backstory are stored with each of its
 * tasks, so a request well within the body limit can come to more.
 */
export const MAX_SPEC_BYTES = 2_000_000;

/**
 * Whether the spec as stored (the UTF-8 bytes of its JSON) would pass MAX_SPEC_BYTES. It is counted
 * task by task and stops once past the limit, so that an agent whose long role repeats in each of
 * its tasks is never written out whole (a hundred tasks of a 900 KB role would be 90 MB).
 */
export function specTooLarge(spec: RunSpec): boolean {
  const { agent, ...rest } = spec;
  const parts = [JSON.stringify(rest)];
  // Each character is at least one byte: past the limit in characters is past it in bytes.
  let chars = parts[0].length + `,"agent":[]`.length;
  for (const task of agent) {
    parts.push(JSON.stringify(task));
    chars += parts[parts.length - 1].length + 1;
    if (chars > MAX_SPEC_BYTES) return true;
  }
  // As counted above: the parts, the agent's brackets and key, and a comma after each part.
  return !fitsInBytes(parts.join(","), MAX_SPEC_BYTES - `,"agent":[]`.length - 1);
}

/**
 * Whether `text` is at most `maxBytes` in UTF-8. A character is at most three bytes, so most texts
 * are told small without being encoded.
 */
export function fitsInBytes(text: string, maxBytes: number): boolean {
  return text.length * 3 <= maxBytes || new TextEncoder().encode(text).length <= maxBytes;
}

export function insertSpec(sql: SqlStorage, spec: RunSpec, copied: CopiedStep[], revision: string | null): void {
  sql.exec("INSERT INTO spec (id, body) VALUES (1, ?)", JSON.stringify(spec));
  // Every step in one statement, run once rather than once a step.
  sql.exec("INSERT INTO steps (idx, name) SELECT key + 1, value FROM json_each(?)", JSON.stringify(spec.tasks));
  for (const step of copied) {
    sql.exec(
      "UPDATE steps SET status = 'done', finished_at = ?, output_key = ?, output_bytes = ?, output_etag = ?, note = ? WHERE idx = ?",
      Date.now(),
      step.key,
      step.bytes,
      step.etag,
      step.note,
      step.idx,
    );
  }
  if (revision !== null) sql.exec("UPDATE steps SET revision = ? WHERE idx = ?", revision, copied.length + 1);
}

/** The revision a person asked for at a step (JSON of Revision), or null. */
export function stepRevision(sql: SqlStorage, idx: number): string | null {
  return sql.exec<{ revision: string | null }>("SELECT revision FROM steps WHERE idx = ?", idx).toArray()[0]?.revision ?? null;
}

/** An answer's idempotency key, as held in its tenant, and the hash of the answer's body. */
export type AnswerKey = { key: string; hash: string };

/** The body hash an answer of this job was given with under `key`, or null when no answer used it. */
export function answeredWith(sql: SqlStorage, key: string): string | null {
  return (
    sql
      .exec<{ hash: string }>("SELECT a.value ->> 1 AS hash FROM steps, json_each(steps.answer_keys) AS a WHERE a.value ->> 0 = ? LIMIT 1", key)
      .toArray()[0]?.hash ?? null
  );
}

/** Records an answer's idempotency key on the step it answered (a step revised is answered again, under another key). */
export function recordAnswerKey(sql: SqlStorage, idx: number, { key, hash }: AnswerKey): void {
  sql.exec("UPDATE steps SET answer_keys = json_insert(COALESCE(answer_keys, '[]'), '$[#]', json_array(?, ?)) WHERE idx = ?", key, hash, idx);
}

export function insertEvents(sql: SqlStorage, events: NewEvent[]): void {
  const at = Date.now();
  for (const event of events) {
    sql.exec("INSERT INTO events (type, data, at) VALUES (?, ?, ?)", event.type, JSON.stringify(event.data), at);
  }
}

export function eventsAfter(sql: SqlStorage, after: number): StoredEvent[] {
  return sql.exec<Row<StoredEvent>>("SELECT seq, type, data FROM events WHERE seq > ? ORDER BY seq", after).toArray();
}

export interface WebhookRow extends WebhookState {
  message_id: string;
  first_attempt_at: number | null;
  body: string | null;
}

export function readWebhook(sql: SqlStorage): WebhookRow | null {
  return sql.exec<Row<WebhookRow>>("SELECT * FROM webhook WHERE id = 1").toArray()[0] ?? null;
}

/** A finished step's output, with the step's index and name and the note a person gave on approving it. */
export type FinishedPart = OutputPart & { idx: number; name: string; note: string | null };

/** The output of every finished step, in order. */
export function finishedParts(sql: SqlStorage): FinishedPart[] {
  return sql
    .exec<Row<FinishedPart>>(
      "SELECT idx, name, output_key AS key, output_bytes AS bytes, output_etag AS etag, note FROM steps WHERE status = 'done' ORDER BY idx",
    )
    .toArray();
}
