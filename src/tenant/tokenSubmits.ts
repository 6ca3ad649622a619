/**
 * A scoped token's submits, counted in its tenant's projection (`token_submits` and `token_keys`,
 * projectionSchema.ts): exact under any concurrency, as the object runs one call at a time. A
 * submit's idempotency key is kept with its count while that submit may still be under way.
 */

/**
 * How long after a token's submit is counted it may still be under way (making its job): a second
 * submit under its key waits for it until then, at most. A submit's own calls take well under a
 * second; a job made since is found by its key anyway.
 */
const SUBMIT_UNDER_WAY_MS = 60_000;

/** Counts one submit, unless the token has submitted `max` jobs already; `key`, if any, is kept with the count. */
export function spendSubmit(storage: DurableObjectStorage, tokenId: string, max: number, expiresAtMs: number, key: string | null): boolean {
  const sql = storage.sql;
  const now = Date.now();
  return storage.transactionSync(() => {
    sql.exec("DELETE FROM token_submits WHERE token_id IN (SELECT token_id FROM token_submits WHERE expires_at < ? ORDER BY expires_at LIMIT 4)", now);
    sql.exec(
      "DELETE FROM token_keys WHERE (token_id, key) IN (SELECT token_id, key FROM token_keys WHERE under_way_until < ? ORDER BY under_way_until LIMIT 4)",
      now,
    );
    const spent = sql.exec<{ n: number }>("SELECT n FROM token_submits WHERE token_id = ?", tokenId).toArray()[0]?.n ?? 0;
    if (spent >= max) return false;
    sql.exec("INSERT INTO token_submits (token_id, n, expires_at) VALUES (?, 1, ?) ON CONFLICT (token_id) DO UPDATE SET n = n + 1", tokenId, expiresAtMs);
    if (key !== null) sql.exec("INSERT OR REPLACE INTO token_keys (token_id, key, under_way_until) VALUES (?, ?, ?)", tokenId, key, now + SUBMIT_UNDER_WAY_MS);
    return true;
  });
}

/** Whether a submit under `key` was counted lately and not given back: it may be under way. */
export function submitUnderWay(sql: SqlStorage, tokenId: string, key: string): boolean {
  return sql.exec("SELECT 1 FROM token_keys WHERE token_id = ? AND key = ? AND under_way_until >= ?", tokenId, key, Date.now()).toArray().length > 0;
}

/** A counted submit under `key` is no longer under way. */
export function releaseSubmitKey(sql: SqlStorage, tokenId: string, key: string): void {
  sql.exec("DELETE FROM token_keys WHERE token_id = ? AND key = ?", tokenId, key);
}

/** How many submits the token has spent: 0 for one never seen, or expired. */
export function submitsSpent(sql: SqlStorage, tokenId: string): number {
  return sql.exec<{ n: number }>("SELECT n FROM token_submits WHERE token_id = ? AND expires_at >= ?", tokenId, Date.now()).toArray()[0]?.n ?? 0;
}

/** Gives a submit back, with the key it came under. */
export function refundSubmit(storage: DurableObjectStorage, tokenId: string, key: string | null): void {
  storage.transactionSync(() => {
    storage.sql.exec("UPDATE token_submits SET n = n - 1 WHERE token_id = ? AND n > 0", tokenId);
    if (key !== null) releaseSubmitKey(storage.sql, tokenId, key);
  });
}
