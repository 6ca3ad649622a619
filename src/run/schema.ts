/** The RunObject's tables, as numbered migrations (see storage/migrations.ts). */
export const RUN_MIGRATIONS = [
  `CREATE TABLE spec (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL)`,
  `CREATE TABLE run (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     status TEXT NOT NULL,
     started_at INTEGER, completed_at INTEGER, cancelled_at INTEGER,
     error TEXT,
     steps_total INTEGER NOT NULL, steps_completed INTEGER NOT NULL,
     current_step TEXT,
     version INTEGER NOT NULL,
     deleted_at INTEGER, deadline_at INTEGER, expires_at INTEGER, next_step_at INTEGER)`,
  `CREATE TABLE steps (
     idx INTEGER PRIMARY KEY,
     name TEXT NOT NULL,
     status TEXT NOT NULL DEFAULT 'pending',
     attempts INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     started_at INTEGER, finished_at INTEGER,
     output_key TEXT, output_bytes INTEGER, output_etag TEXT)`,
  `CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, data TEXT NOT NULL, at INTEGER NOT NULL)`,
  `CREATE TABLE outbox (kind TEXT PRIMARY KEY, payload TEXT NOT NULL, due_at INTEGER NOT NULL, attempts INTEGER NOT NULL)`,
] as const;
