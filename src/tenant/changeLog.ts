/**
 * The feed's change log, in a tenant's projection: every change to its jobs the feed tells, in
 * the order they were made, kept a while so that a watcher can resume from a position
 * (Last-Event-ID). Written inside the projection's transactions; read by its watchers.
 */
import type { Status } from "../run/transitions";
import type { Change } from "./feed";

/**
 * The log keeps the newest `keep` changes (FEED_KEEP_CHANGES, 10,000 by default), and older ones
 * while they are younger than KEEP_MS, up to MAX_FACTOR times `keep` in all.
 */
const KEEP_MS = 86_400_000;
const MAX_FACTOR = 10;
/**
 * The log is pruned at every PRUNE_EVERY-th change, of up to PRUNED_PER_CHANGE old changes for
 * each: more than one, so that they never pile up. The pruning statement costs more than writing
 * the change, even when it removes nothing, so a change pays for it rarely.
 */
const PRUNE_EVERY = 16;
const PRUNED_PER_CHANGE = 4;
/** Where the newest position pruned is kept, so that a watcher from before it is told to list again. */
const PRUNED_THROUGH = "feed_pruned_through";

export class ChangeLog {
  constructor(
    private readonly storage: DurableObjectStorage,
    private readonly keep: number,
  ) {}

  /** Writes a change (inside the caller's transaction), now and then pruning old ones; answers it as written. */
  append(kind: Change["kind"], previous: Status | null, job: string): Change {
    const now = Date.now();
    const { id } = this.storage.sql
      .exec<{ id: number }>("INSERT INTO changes (at, kind, previous_status, job) VALUES (?, ?, ?, ?) RETURNING id", now, kind, previous, job)
      .one();
    if (id % PRUNE_EVERY === 0) this.prune(id, now);
    return { id, kind, previous_status: previous, job };
  }

  /** Up to `limit` changes after position `id`, oldest first. */
  after(id: number, limit: number): Change[] {
    return this.storage.sql.exec<Change>("SELECT id, kind, previous_status, job FROM changes WHERE id > ? ORDER BY id LIMIT ?", id, limit).toArray();
  }

  /** The newest position: where a watcher from now starts. */
  head(): number {
    return this.storage.sql.exec<{ id: number | null }>("SELECT MAX(id) AS id FROM changes").one().id ?? this.prunedThrough();
  }

  /** The newest position no longer kept: a watcher resuming from before it has missed changes. */
  prunedThrough(): number {
    return this.storage.kv.get<number>(PRUNED_THROUGH) ?? 0;
  }

  /**
   * Of the oldest few changes outside the newest `keep` before `newest`, those old enough or
   * outside the newest `keep` times MAX_FACTOR. Only the oldest are looked at (changes are
   * written in time order), so that pruning reads a few rows of the log however long it is.
   * It never takes the newest change (`keep` is at least 1): changes are numbered one past it.
   */
  private prune(newest: number, now: number): void {
    const pruned = this.storage.sql
      .exec<{ id: number }>(
        `DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE id <= ? ORDER BY id LIMIT ?) AND (at < ? OR id <= ?) RETURNING id`,
        newest - this.keep,
        PRUNE_EVERY * PRUNED_PER_CHANGE,
        now - KEEP_MS,
        newest - this.keep * MAX_FACTOR,
      )
      .toArray();
    if (pruned.length > 0) this.storage.kv.put(PRUNED_THROUGH, Math.max(...pruned.map((r) => r.id)));
  }
}
