/**
 * Numbered schema migrations for a SQLite-backed Durable Object. Each step runs once,
 * inside one transaction with the bookkeeping row that records it. A database known to hold
 * nothing yet may be given `makeSchema` instead: the schema every step together makes, in fewer
 * statements (a new job's object is made on every submit, and its history of ALTER TABLEs is
 * most of what creating it costs). It is recorded as every step applied, so that an object made
 * this way upgrades, and is read by an older version, as one migrated step by step.
 */
const BOOKKEEPING = "CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY)";

export function migrate(storage: DurableObjectStorage, steps: readonly string[]): void {
  storage.transactionSync(() => {
    storage.sql.exec(BOOKKEEPING);
    const applied = storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM _migrations").one().n;
    steps.slice(applied).forEach((ddl, i) => {
      storage.sql.exec(ddl);
      storage.sql.exec("INSERT INTO _migrations (id) VALUES (?)", applied + i + 1);
    });
  });
}

/**
 * Makes `schema`, what `steps` make together, in a database that holds nothing (the caller knows
 * it, so nothing is read first), and records every step as applied. Called inside the
 * transaction that writes the database's first rows, so that the schema and those rows are made
 * together or not at all.
 */
export function makeSchema(sql: SqlStorage, steps: readonly string[], schema: readonly string[]): void {
  // One call for every statement (the parameter is the last one's): each call into the runtime
  // costs, and a new job's object makes its schema on every submit.
  const recordSteps = "INSERT INTO _migrations (id) SELECT value FROM json_each(?)";
  sql.exec([BOOKKEEPING, ...schema, recordSteps].join(";\n"), JSON.stringify(steps.map((_, i) => i + 1)));
}

/** True when the object's database holds the table: a read that writes nothing. */
export function hasTable(sql: SqlStorage, name: string): boolean {
  return sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name).toArray().length > 0;
}

/**
 * The steps that make `table` again as `ddl` has it, its rows kept: renamed aside, made anew,
 * `columns` copied over, the old one dropped, and with it its indexes, its triggers and its
 * counter in `sqlite_sequence`. Indexes and triggers the new table needs are steps after these:
 * made after the copy, a trigger does not count the rows copied a second time.
 */
export const remakeTable = (table: string, ddl: string, columns: string): string[] => [
  `ALTER TABLE ${table} RENAME TO ${table}_before`,
  ddl,
  `INSERT INTO ${table} (${columns}) SELECT ${columns} FROM ${table}_before`,
  `DROP TABLE ${table}_before`,
];
