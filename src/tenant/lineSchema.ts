/**
 * The tenant line's tables, as numbered migrations (src/storage/migrations.ts): its places, the
 * tally of places per state that triggers keep, and the statements that must read through a
 * partial index by name. Never edit a migration: a change is a new one at the end.
 */
import { remakeTable } from "../storage/migrations";

/**
 * A place's state: `scheduled` (delayed, not yet eligible), `waiting` (in line), `running`
 * (holds a slot; `told` = 0 until the job has heard, or for a slot granted as the job joined, until
 * the job, asked a while later, has said it was made), `expired` (its TTL passed; `told` = 0 until
 * the job has heard, then the place goes).
 */
export type PlaceState = "scheduled" | "waiting" | "running" | "expired";

/** A tally of places per state, kept by triggers, so that the queued limit reads one row. */
const COUNT_NEW = `INSERT INTO state_counts (state, n) VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;`;
const UNCOUNT_OLD = `UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;`;

/** A place's columns after its number (`seq`): one definition for the table as first made and as made again. */
const PLACE_COLUMNS = `
     job_id TEXT NOT NULL UNIQUE,
     state TEXT NOT NULL,
     priority INTEGER NOT NULL,
     concurrency_key TEXT,
     start_at INTEGER,
     expires_at INTEGER,
     ttl_s INTEGER,
     joined_at INTEGER NOT NULL,
     granted_at INTEGER,
     told INTEGER NOT NULL DEFAULT 1,
     retry_at INTEGER)`;
/** The places' indexes and the triggers that keep their tallies, as made with the table and made again after it. */
const IN_LINE = `CREATE INDEX places_in_line ON places (state, priority DESC, seq)`;
const BY_KEY = `CREATE INDEX places_by_key ON places (state, concurrency_key) WHERE concurrency_key IS NOT NULL`;
const BY_START = `CREATE INDEX places_by_start ON places (start_at) WHERE state = 'scheduled'`;
const BY_EXPIRY = `CREATE INDEX places_by_expiry ON places (expires_at) WHERE state IN ('scheduled', 'waiting')`;
const UNTOLD = `CREATE INDEX places_untold ON places (retry_at) WHERE told = 0`;
const COUNTED = [
  `CREATE TRIGGER places_counted_in AFTER INSERT ON places BEGIN ${COUNT_NEW} END`,
  `CREATE TRIGGER places_counted_out AFTER DELETE ON places BEGIN ${UNCOUNT_OLD} END`,
  `CREATE TRIGGER places_recounted AFTER UPDATE OF state ON places BEGIN ${UNCOUNT_OLD} ${COUNT_NEW} END`,
];

export const LINE_MIGRATIONS = [
  `CREATE TABLE places (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,${PLACE_COLUMNS}`,
  IN_LINE,
  `CREATE INDEX places_by_key ON places (state, concurrency_key)`,
  BY_START,
  BY_EXPIRY,
  `CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)`,
  ...COUNTED,
  `CREATE TABLE audit (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL)`,
  // Jobs still to be told something: found without walking the whole line.
  UNTOLD,
  // The index by key holds only the places that have one: a job without a concurrency key changes
  // one page fewer when it joins. The keys at their limit are still read through it (`concurrency_key
  // IS NOT NULL`), an older version's too.
  `DROP INDEX places_by_key`,
  BY_KEY,
  // Places numbered without AUTOINCREMENT, so that a join does not also write a counter in
  // `sqlite_sequence`: a page and a row written fewer. A number is only ever set against those of
  // the places held with it (the order in line), so one past the newest held does as well. Made
  // again with its places kept; then its indexes and the triggers that keep the tallies, as they
  // were (made after the copy, the triggers count nothing twice).
  ...remakeTable(
    "places",
    `CREATE TABLE places (
     seq INTEGER PRIMARY KEY,${PLACE_COLUMNS}`,
    "seq, job_id, state, priority, concurrency_key, start_at, expires_at, ttl_s, joined_at, granted_at, told, retry_at",
  ),
  IN_LINE,
  BY_KEY,
  BY_START,
  BY_EXPIRY,
  UNTOLD,
  ...COUNTED,
] as const;

/**
 * The line's due times, each read through its partial index by name (INDEXED BY). Left to itself,
 * SQLite reads them through places_by_key (state = ?) and walks every delayed or waiting job:
 * milliseconds a call in a line of thousands, and every submit and every end asks for `next`.
 */
export const DUE_TIMES = {
  /**
   * The line's next work of its own, in one read: the first delayed start, the first expiry, and
   * the first job to tell (`?`: now, for one not tried yet). Null where there is none.
   */
  next: `SELECT
    (SELECT MIN(start_at) FROM places INDEXED BY places_by_start WHERE state = 'scheduled') AS start_at,
    (SELECT MIN(expires_at) FROM places INDEXED BY places_by_expiry WHERE state IN ('scheduled', 'waiting')) AS expires_at,
    (SELECT MIN(COALESCE(retry_at, ?)) FROM places INDEXED BY places_untold WHERE told = 0) AS tell_at`,
  /** Delayed jobs whose time has come join the line (`?`: now). */
  promoteDue: `UPDATE places SET state = 'waiting' WHERE seq IN
    (SELECT seq FROM places INDEXED BY places_by_start WHERE state = 'scheduled' AND start_at <= ? ORDER BY start_at LIMIT 1000)`,
  /** Jobs whose TTL passed leave the line, to be told to fail (`?`: now). */
  expireOverdue: `UPDATE places SET state = 'expired', told = 0, retry_at = NULL WHERE seq IN
    (SELECT seq FROM places INDEXED BY places_by_expiry WHERE state IN ('scheduled', 'waiting') AND expires_at <= ? ORDER BY expires_at LIMIT 1000)`,
} as const;
