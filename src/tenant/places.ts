/**
 * The places of one tenant's line, read and written: the queries its requests and its alarm
 * share. Given the line's SQL and its limits, nothing else; the line's object decides when.
 */
import type { Limits } from "../config";
import type { PlaceRequest } from "../run/job";
import type { PlaceState } from "./lineSchema";

/** At most this many jobs are told something (started, expired, audited) in one alarm. */
export const BATCH = 100;

export type Place = { job_id: string; state: PlaceState; priority: number; seq: number; concurrency_key: string | null };

/** A place the line still has to tell something, or ask about. */
export type Untold = { job_id: string; joined_at: number; ttl_s: number | null };

export class Places {
  constructor(
    private readonly sql: SqlStorage,
    private readonly limits: Limits,
  ) {}

  get(jobId: string): Place | undefined {
    return this.sql
      .exec<Place>("SELECT job_id, state, priority, seq, concurrency_key FROM places WHERE job_id = ?", jobId)
      .toArray()[0];
  }

  /** The job's place goes, and with it any slot it held. */
  remove(jobId: string): void {
    this.sql.exec("DELETE FROM places WHERE job_id = ?", jobId);
  }

  /** How many places of each state the line holds. */
  counts(): Record<PlaceState, number> {
    const counts: Record<PlaceState, number> = { scheduled: 0, waiting: 0, running: 0, expired: 0 };
    for (const row of this.sql.exec<{ state: PlaceState; n: number }>("SELECT state, n FROM state_counts")) counts[row.state] = row.n;
    return counts;
  }

  /**
   * `seq`: the place's order in line; null: after everyone. `askAt`: when the job is to be asked
   * whether it holds the slot it was granted as it joined (null: nothing to ask).
   */
  insert(
    request: PlaceRequest,
    state: PlaceState,
    grantedAt: number | null,
    expiresAt: number | null,
    seq: number | null = null,
    askAt: number | null = null,
  ): void {
    this.sql.exec(
      `INSERT INTO places (seq, job_id, state, priority, concurrency_key, start_at, expires_at, ttl_s, joined_at, granted_at, told, retry_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      seq,
      request.job_id,
      state,
      request.priority,
      request.concurrency_key,
      request.start_at,
      expiresAt,
      request.ttl_s,
      Date.now(),
      grantedAt,
      askAt === null ? 1 : 0,
      askAt,
    );
  }

  /** A new job may take a free slot now (`running`: the slots taken): its key allows, and no one in line would go first. */
  mayStartNow(request: PlaceRequest, running: number): boolean {
    if (running >= this.limits.maxRunningPerTenant) return false;
    const blocked = this.blockedKeys();
    if (request.concurrency_key !== null && blocked.includes(request.concurrency_key)) return false;
    const first = this.nextInLine(blocked);
    return !first || first.priority < request.priority;
  }

  /** The first waiting job, by priority then arrival, whose key is not at its limit. */
  nextInLine(blocked: string[]): Place | undefined {
    const keyFilter = blocked.length ? `AND (concurrency_key IS NULL OR concurrency_key NOT IN (${blocked.map(() => "?").join(", ")}))` : "";
    return this.sql
      .exec<Place>(
        `SELECT job_id, state, priority, seq, concurrency_key FROM places WHERE state = 'waiting' ${keyFilter}
         ORDER BY priority DESC, seq LIMIT 1`,
        ...blocked,
      )
      .toArray()[0];
  }

  /** Keys whose running jobs are at MAX_RUNNING_PER_KEY. */
  blockedKeys(): string[] {
    return this.sql
      .exec<{ key: string }>(
        `SELECT concurrency_key AS key FROM places WHERE state = 'running' AND concurrency_key IS NOT NULL
         GROUP BY concurrency_key HAVING COUNT(*) >= ?`,
        this.limits.maxRunningPerKey,
      )
      .toArray()
      .map((r) => r.key);
  }

  /**
   * Each waiting job's 1-based place among the jobs that could start next (null for jobs that
   * are not waiting: delayed, running, or unknown here).
   */
  positions(jobIds: string[]): Record<string, number | null> {
    const out: Record<string, number | null> = Object.fromEntries(jobIds.map((id) => [id, null]));
    // In line order, each from the one before it: a page of jobs walks the line once, not once each.
    const waiting = jobIds
      .map((id) => this.get(id))
      .filter((place): place is Place => place?.state === "waiting")
      .sort((a, b) => b.priority - a.priority || a.seq - b.seq);
    let previous: Place | null = null;
    let position = 0;
    for (const place of waiting) {
      position += this.countInLine(previous, place);
      out[place.job_id] = position;
      previous = place;
    }
    return out;
  }

  /** Waiting jobs after `after` (or from the head of the line) up to and including `upTo`, in line order. */
  private countInLine(after: Place | null, upTo: Place): number {
    const count = (where: string, ...params: number[]) =>
      this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM places WHERE state = 'waiting' AND ${where}`, ...params).one().n;
    if (after && after.priority === upTo.priority) return count("priority = ? AND seq > ? AND seq <= ?", upTo.priority, after.seq, upTo.seq);
    const higher = after
      ? count("priority = ? AND seq > ?", after.priority, after.seq) + count("priority < ? AND priority > ?", after.priority, upTo.priority)
      : count("priority > ?", upTo.priority);
    return higher + count("priority = ? AND seq <= ?", upTo.priority, upTo.seq);
  }

  /** Places of `state` whose job is still to be told (or asked), and is due to be. */
  untold(state: "running" | "expired"): Untold[] {
    return this.sql
      .exec<Untold>(
        "SELECT job_id, joined_at, ttl_s FROM places WHERE state = ? AND told = 0 AND COALESCE(retry_at, 0) <= ? ORDER BY seq LIMIT ?",
        state,
        Date.now(),
        BATCH,
      )
      .toArray();
  }

  /** The job could not be reached: it is tried again RETRY_BASE_MS later. */
  retryLater(jobId: string): void {
    this.sql.exec("UPDATE places SET retry_at = ? WHERE job_id = ?", Date.now() + this.limits.retryBaseMs, jobId);
  }
}
