/**
 * Numbered schema migrations for a SQLite-backed Durable Object. Each step runs once,
 * inside one transaction with the bookkeeping row that records it.
 */
export function migrate(storage: DurableObjectStorage, steps: readonly string[]): void {
  storage.transactionSync(() => {
    storage.sql.exec("CREATE TABLE IF NOT EXISTS _migrations (id INTEGER PRIMARY KEY)");
    const applied = storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM _migrations").one().n;
    steps.slice(applied).forEach((ddl, i) => {
      storage.sql.exec(ddl);
      storage.sql.exec("INSERT INTO _migrations (id) VALUES (?)", applied + i + 1);
    });
  });
}

/** True when the object's database holds the table: a read that writes nothing. */
export function hasTable(sql: SqlStorage, name: string): boolean {
  return sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name).toArray().length > 0;
}
