/**
 * The tenant projection's tables, as numbered migrations (src/storage/migrations.ts): its jobs
 * with their labels, the tallies that triggers keep for totals and /stats, idempotency keys,
 * tombstones, usage by day, the feed's change log and token submit counts (with their keys). Never edit an entry:
 * a change is a new one at the end.
 */
import { remakeTable } from "../storage/migrations";

/** Trigger bodies that keep the tallies: count the new row in, and the old row out. */
const COUNT_NEW = `
  INSERT INTO status_counts (status, n) VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1;
  INSERT INTO session_counts (session_id, status, n) SELECT NEW.session_id, NEW.status, 1 WHERE NEW.session_id IS NOT NULL
    ON CONFLICT (session_id, status) DO UPDATE SET n = n + 1;`;
const UNCOUNT_OLD = `
  UPDATE status_counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE session_counts SET n = n - 1 WHERE session_id = OLD.session_id AND status = OLD.status;`;

/** The label rows of `job` (NEW in a trigger, or each row of `from`): its tags and its metadata entries. */
const LABEL_ROWS = (job: string, from = "") => `
  INSERT OR IGNORE INTO labels (label, seq, status, session_id)
  SELECT 't:' || t.value, ${job}.seq, ${job}.status, ${job}.session_id FROM ${from} json_each(${job}.body, '$.tags') AS t
    WHERE json_type(${job}.body, '$.tags') = 'array'
  UNION SELECT 'm:' || json_array(m.key, m.value), ${job}.seq, ${job}.status, ${job}.session_id FROM ${from} json_each(${job}.body, '$.metadata') AS m
    WHERE json_type(${job}.body, '$.metadata') = 'object'`;
const LABEL_COUNT_NEW = `
  INSERT INTO label_counts (label, status, n) VALUES (NEW.label, NEW.status, 1) ON CONFLICT (label, status) DO UPDATE SET n = n + 1;
  INSERT INTO label_session_counts (label, session_id, status, n) SELECT NEW.label, NEW.session_id, NEW.status, 1 WHERE NEW.session_id IS NOT NULL
    ON CONFLICT (label, session_id, status) DO UPDATE SET n = n + 1;`;
const LABEL_UNCOUNT_OLD = `
  UPDATE label_counts SET n = n - 1 WHERE label = OLD.label AND status = OLD.status;
  UPDATE label_session_counts SET n = n - 1 WHERE label = OLD.label AND session_id = OLD.session_id AND status = OLD.status;`;
/**
 * Counting out as above, and a session's or label's tally that reaches 0 goes with it: a session
 * or tag used once leaves no row behind once its jobs are gone. (The earlier bodies stay as the
 * migrations that first created the triggers wrote them.)
 */
const UNCOUNT_OLD_AND_PRUNE = `${UNCOUNT_OLD}
  DELETE FROM session_counts WHERE session_id = OLD.session_id AND status = OLD.status AND n = 0;`;
const LABEL_UNCOUNT_OLD_AND_PRUNE = `${LABEL_UNCOUNT_OLD}
  DELETE FROM label_counts WHERE label = OLD.label AND status = OLD.status AND n = 0;
  DELETE FROM label_session_counts WHERE label = OLD.label AND session_id = OLD.session_id AND status = OLD.status AND n = 0;`;

export const PROJECTION_MIGRATIONS = [
  `CREATE TABLE jobs (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL UNIQUE,
     status TEXT NOT NULL,
     session_id TEXT,
     version INTEGER NOT NULL,
     body TEXT NOT NULL)`,
  `CREATE INDEX jobs_by_status ON jobs (status, seq)`,
  `CREATE INDEX jobs_by_session ON jobs (session_id, seq)`,
  `CREATE TABLE tombstones (job_id TEXT PRIMARY KEY, deleted_at INTEGER NOT NULL)`,
  `CREATE TABLE idempotency (key TEXT PRIMARY KEY, job_id TEXT NOT NULL, body_hash TEXT NOT NULL)`,
  `CREATE INDEX idempotency_by_job ON idempotency (job_id)`,
  // Run slots, before they moved to the tenant's line (TenantLine): handed over, then dropped.
  `CREATE TABLE slots (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, running INTEGER NOT NULL DEFAULT 0)`,
  `CREATE INDEX slots_by_state ON slots (running, seq)`,
  // Tallies kept by triggers, so that list totals and stats read a few rows however many jobs
  // the tenant has: one per status, and one per session and status.
  `CREATE TABLE status_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL)`,
  `CREATE TABLE session_counts (session_id TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (session_id, status))`,
  `INSERT INTO status_counts (status, n) SELECT status, COUNT(*) FROM jobs GROUP BY status`,
  `INSERT INTO session_counts (session_id, status, n)
     SELECT session_id, status, COUNT(*) FROM jobs WHERE session_id IS NOT NULL GROUP BY session_id, status`,
  `CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs BEGIN ${COUNT_NEW} END`,
  `CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs BEGIN ${UNCOUNT_OLD} END`,
  `CREATE TRIGGER jobs_recounted AFTER UPDATE OF status, session_id ON jobs BEGIN ${UNCOUNT_OLD} ${COUNT_NEW} END`,
  // The unfiltered list's order without the job bodies: what a deep page's offset walks.
  `CREATE INDEX jobs_by_seq ON jobs (seq)`,
  `ALTER TABLE slots RENAME TO slots_to_hand_over`,
  // Tombstones are pruned by age (see TOMBSTONE_TTL_MS).
  `CREATE INDEX tombstones_by_age ON tombstones (deleted_at)`,
  // The tenant's token usage per UTC day: what its jobs' snapshots added that day. Kept when
  // the jobs are deleted.
  `CREATE TABLE usage_days (
     day TEXT PRIMARY KEY,
     prompt_tokens INTEGER NOT NULL DEFAULT 0,
     completion_tokens INTEGER NOT NULL DEFAULT 0,
     model_calls INTEGER NOT NULL DEFAULT 0)`,
  // Labels: a job's tags (`t:<tag>`) and metadata entries (`m:["<key>","<value>"]`), each a row
  // with the job's status and session, so that a filtered list reads the rows of its labels, and
  // tallies per label give its exact total, however many jobs the tenant has.
  `CREATE TABLE labels (label TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, session_id TEXT, PRIMARY KEY (label, seq)) WITHOUT ROWID`,
  `CREATE INDEX labels_by_status ON labels (label, status, seq)`,
  `CREATE INDEX labels_by_session ON labels (label, session_id, seq)`,
  `CREATE INDEX labels_of_job ON labels (seq)`,
  `CREATE TABLE label_counts (label TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (label, status)) WITHOUT ROWID`,
  `CREATE TABLE label_session_counts (label TEXT NOT NULL, session_id TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
     PRIMARY KEY (label, session_id, status)) WITHOUT ROWID`,
  `CREATE TRIGGER labels_counted_in AFTER INSERT ON labels BEGIN ${LABEL_COUNT_NEW} END`,
  `CREATE TRIGGER labels_counted_out AFTER DELETE ON labels BEGIN ${LABEL_UNCOUNT_OLD} END`,
  `CREATE TRIGGER labels_recounted AFTER UPDATE OF status, session_id ON labels BEGIN ${LABEL_UNCOUNT_OLD} ${LABEL_COUNT_NEW} END`,
  LABEL_ROWS("jobs", "jobs,"),
  `CREATE TRIGGER jobs_labelled AFTER INSERT ON jobs BEGIN ${LABEL_ROWS("NEW")}; END`,
  `CREATE TRIGGER jobs_unlabelled AFTER DELETE ON jobs BEGIN DELETE FROM labels WHERE seq = OLD.seq; END`,
  `CREATE TRIGGER jobs_relabelled AFTER UPDATE OF status, session_id ON jobs
     WHEN OLD.status IS NOT NEW.status OR OLD.session_id IS NOT NEW.session_id
   BEGIN UPDATE labels SET status = NEW.status, session_id = NEW.session_id WHERE seq = NEW.seq; END`,
  // When the live feed last told of each job: progress is told at most once a second.
  `ALTER TABLE jobs ADD COLUMN fed_at INTEGER NOT NULL DEFAULT 0`,
  // The live feed's change log: each change of a job as its watchers are told it.
  `CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL, previous_status TEXT, job TEXT NOT NULL)`,
  // The submits of each scoped token, counted exactly; kept until the token expires.
  `CREATE TABLE token_submits (token_id TEXT PRIMARY KEY, n INTEGER NOT NULL, expires_at INTEGER NOT NULL)`,
  `CREATE INDEX token_submits_by_expiry ON token_submits (expires_at)`,
  // Session and label tallies at 0 go (the per-status ones, a handful, stay): the triggers that
  // count out, made again to prune, then the zeros kept so far.
  `DROP TRIGGER jobs_counted_out`,
  `CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs BEGIN ${UNCOUNT_OLD_AND_PRUNE} END`,
  `DROP TRIGGER jobs_recounted`,
  `CREATE TRIGGER jobs_recounted AFTER UPDATE OF status, session_id ON jobs BEGIN ${UNCOUNT_OLD_AND_PRUNE} ${COUNT_NEW} END`,
  `DROP TRIGGER labels_counted_out`,
  `CREATE TRIGGER labels_counted_out AFTER DELETE ON labels BEGIN ${LABEL_UNCOUNT_OLD_AND_PRUNE} END`,
  `DROP TRIGGER labels_recounted`,
  `CREATE TRIGGER labels_recounted AFTER UPDATE OF status, session_id ON labels BEGIN ${LABEL_UNCOUNT_OLD_AND_PRUNE} ${LABEL_COUNT_NEW} END`,
  `DELETE FROM session_counts WHERE n = 0`,
  `DELETE FROM label_counts WHERE n = 0`,
  `DELETE FROM label_session_counts WHERE n = 0`,
  // The idempotency key of each submit of a scoped token that was counted lately, and not given
  // back: a second submit under the same key, past the token's limit, waits for the first's job
  // instead of being refused. Kept for as long as a submit may be under way.
  `CREATE TABLE token_keys (token_id TEXT NOT NULL, key TEXT NOT NULL, under_way_until INTEGER NOT NULL, PRIMARY KEY (token_id, key)) WITHOUT ROWID`,
  `CREATE INDEX token_keys_by_age ON token_keys (under_way_until)`,
  // The index by session holds only the jobs that have one: a job without a session changes one
  // page fewer when it is entered. A list by session (`session_id = ?`) still reads it, an older
  // version's too.
  `DROP INDEX jobs_by_session`,
  `CREATE INDEX jobs_by_session ON jobs (session_id, seq) WHERE session_id IS NOT NULL`,
  // The feed's change log numbered without AUTOINCREMENT, so that a change does not also write its
  // counter in `sqlite_sequence`: a page and a row written fewer for every change. The numbers
  // are the same, one past the newest, since pruning always keeps the newest change
  // (FEED_KEEP_CHANGES is at least 1). Made again with its rows kept.
  ...remakeTable(
    "changes",
    `CREATE TABLE changes (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, previous_status TEXT, job TEXT NOT NULL)`,
    "id, at, kind, previous_status, job",
  ),
  // A deleted job's tombstone keeps a digest of its idempotency key (SHA-256, hex; never the key):
  // a job whose submit was cut short before registering it, reporting after its repeat's job was
  // deleted, finds that the key it claims was taken after it was made (TenantProjection.upsert).
  `ALTER TABLE tombstones ADD COLUMN key_digest TEXT`,
  `CREATE INDEX tombstones_by_key ON tombstones (key_digest, deleted_at) WHERE key_digest IS NOT NULL`,
  // Each counted submit of a scoped token whose end was not heard yet, with the job it is making
  // and that job's projection shard: a submit cut short between its count and its answer is asked
  // about a minute on, and its count given back if it made no job (tokenSubmits.ts).
  `CREATE TABLE token_spends (job_id TEXT PRIMARY KEY, token_id TEXT NOT NULL, projection TEXT NOT NULL, ask_at INTEGER NOT NULL) WITHOUT ROWID`,
  `CREATE INDEX token_spends_by_time ON token_spends (ask_at)`,
  // A tombstone says whether its job was discarded as one its submit never answered with (another
  // job held its idempotency key, or its submit failed): a token's submit that made only such a
  // job made none, and is given back (tokenSubmits.ts). Tombstones from before say it was deleted.
  `ALTER TABLE tombstones ADD COLUMN discarded INTEGER NOT NULL DEFAULT 0`,
] as const;
