/**
 * One Durable Object per tenant: the projection of its jobs that list and stats read, and its
 * idempotency keys. RunObjects push version-guarded snapshots here from their outboxes; a
 * tombstone keeps a deleted job from ever coming back through a late update. Who runs next is
 * not decided here: that is the tenant's line (TenantLine).
 */
import { DurableObject } from "cloudflare:workers";
import type { Job, Stats } from "../schemas";
import { hex, sha256 } from "../digest";
import { limits } from "../config";
import { giveUpNameless, rememberTenant, tenantOf } from "../ids";
import { ringBy } from "../storage/alarm";
import { migrate } from "../storage/migrations";
import type { KeyClaim } from "../run/job";
import { STATUSES, type Status } from "../run/transitions";
import { ChangeLog } from "./changeLog";
import { FeedWatchers, type Change, type RunFilter } from "./feed";
import { handOver, hasSlotsToHandOver } from "./handover";
import { MAX_SHARDS, shardIndex, tenantOfObject } from "./shards";
import { listPage, matchingJobIds, type BulkFilter, type ListFilter, type ListPage } from "./listing";
import { PROJECTION_MIGRATIONS } from "./projectionSchema";
import { askAboutSpends, refundSubmit, releaseSubmitKey, spendSubmit, submitMade, submitsSpent, submitUnderWay, type SpentOn } from "./tokenSubmits";
import { addUsage, counted, NO_USAGE, SNAPSHOT_USAGE, usageColumns, usageStats, type Counted } from "./usage";

/**
 * How long a deleted job's tombstone is kept: longer than any update of it can be in flight (its
 * object stops sending once it is deleted), so that none can bring the job back.
 */
export const TOMBSTONE_TTL_MS = 86_400_000;
/** Expired tombstones removed by each removal: more than one, so that they never pile up. */
const TOMBSTONES_PRUNED_PER_REMOVAL = 4;

/** The feed tells a job's progress at most this often; every status change is told. */
const FEED_PROGRESS_MS = 1000;

/** A job just created, as the submit that created it registers it. */
export interface Admission {
  job: Job;
  version: number;
  idempotency_key: string | null;
  body_hash: string | null;
}

export type AdmitResult =
  | { admitted: true }
  | { admitted: false; job_id: string; same_body: boolean; job: Job | null };
/** The job an idempotency key names, and whether it was submitted with the same body. */
export type HeldKey = Extract<AdmitResult, { admitted: false }>;

/** What an upsert did: `superseded_by` names the job holding the key the snapshot's job claimed, when another holds it. */
export interface Upserted {
  superseded_by: string | null;
}

/**
 * A job's sequence number is the time it was first heard of here, in milliseconds, times
 * SEQ_SCALE, plus this shard's index (below MAX_SHARDS, the step): unique across a tenant's shards, in the
 * same order in each (newest highest), so that their lists merge by it and one cursor is a
 * position in every shard. Within a shard it only grows, by SEQ_STEP at least, whatever the
 * clock does. (Jobs listed before sequence numbers were times keep their small ones: older.)
 */
const SEQ_SCALE = 1024;
const SEQ_STEP = MAX_SHARDS;

/** What a tombstone keeps of a deleted job's idempotency key. */
const keyDigest = async (key: string): Promise<string> => hex(await sha256(key));

export class TenantProjection extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly log: ChangeLog;
  private readonly feed = new FeedWatchers((id, limit) => this.log.after(id, limit));
  /** Changes written by the transaction under way, told to the feed's watchers once it commits. */
  private written: Change[] = [];
  /** The last job sequence number given (see nextSeq), once read. */
  private lastSeq: number | null = null;
  /** This object's index among its tenant's shards, once read from its name. */
  private shard: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    migrate(ctx.storage, PROJECTION_MIGRATIONS);
    this.log = new ChangeLog(ctx.storage, limits(env).feedKeepChanges);
    rememberTenant(ctx);
    if (hasSlotsToHandOver(this.sql)) void ctx.storage.setAlarm(Date.now() + limits(env).alarmDelayMs);
  }

  /** The alarm's two errands: the old line's handover, and the token submits whose end was never heard. */
  async alarm(): Promise<void> {
    const tenant = tenantOf(this.ctx);
    if (tenant === null) return giveUpNameless(this.ctx, Date.now() + 60_000 + limits(this.env).alarmDelayMs);
    if (hasSlotsToHandOver(this.sql)) await handOver(this.ctx, this.env, tenantOfObject(tenant));
    await askAboutSpends(this.ctx, this.env, tenant, (jobId) => this.knows(jobId));
  }

  /**
   * Whether this shard holds the job, or its tombstone (it was deleted within the day): whether a
   * submit made it. A job discarded as one its submit never answered with (another under its key
   * was, or its submit failed) is no job made.
   */
  knows(jobId: string): boolean {
    return (
      this.sql
        .exec("SELECT 1 FROM jobs WHERE job_id = ?1 UNION ALL SELECT 1 FROM tombstones WHERE job_id = ?1 AND discarded = 0 LIMIT 1", jobId)
        .toArray().length > 0
    );
  }

  /**
   * Registers a job just created, unless its idempotency key already names another: then that
   * job is returned, and the new one is the caller's to discard. The job's own updates may have
   * arrived first; the newer snapshot stands.
   */
  admit(entry: Admission): AdmitResult {
    return this.change((): AdmitResult => {
      const { job } = entry;
      if (entry.idempotency_key !== null) {
        const holder = this.keyHolder(entry.idempotency_key, entry.body_hash);
        if (holder && holder.job_id !== job.job_id) return holder;
        if (!holder) this.holdKey(entry.idempotency_key, job.job_id, entry.body_hash);
      }
      this.apply(job, entry.version);
      return { admitted: true };
    });
  }

  /** The job an idempotency key names, if any: for a submit refused before its job was made. */
  keyHolder(key: string, bodyHash: string | null): HeldKey | null {
    const held = this.sql.exec<{ job_id: string; body_hash: string }>("SELECT job_id, body_hash FROM idempotency WHERE key = ?", key).toArray()[0];
    return held ? { admitted: false, job_id: held.job_id, same_body: held.body_hash === bodyHash, job: this.snapshot(held.job_id) } : null;
  }

  /**
   * Applies a job snapshot if it is newer than the one held; ignored for deleted jobs. A job not
   * held here that claims its idempotency key was never registered by its submit (cut short
   * after making it): it takes the key, as `admit` would have, unless another job holds it, or
   * held it and was deleted after this one was made. Then nothing is applied and that job is
   * named, for this one to discard itself: the submit's repeat made it, and that is the job its
   * client was answered with (and may have deleted since).
   */
  async upsert(job: Job, version: number, claim?: KeyClaim): Promise<Upserted> {
    const before = this.held(job.job_id);
    // Only a job not yet held here claims its key, so only its claim is digested.
    const digest = claim && !before.deleted && !before.snapshot ? await keyDigest(claim.idempotency_key) : null;
    return this.change((): Upserted => {
      // Read again only after the digest's await, when another call may have changed it.
      const held = digest === null ? before : this.held(job.job_id);
      if (claim && digest !== null && !held.deleted && !held.snapshot) {
        const holder = this.sql.exec<{ job_id: string }>("SELECT job_id FROM idempotency WHERE key = ?", claim.idempotency_key).toArray()[0];
        if (holder) {
          if (holder.job_id !== job.job_id) return { superseded_by: holder.job_id };
        } else {
          const taken = this.takenSince(digest, Date.parse(job.created_at));
          if (taken) return { superseded_by: taken };
          this.holdKey(claim.idempotency_key, job.job_id, claim.body_hash);
        }
      }
      this.apply(job, version, held);
      return { superseded_by: null };
    });
  }

  /** A deleted job that held the key (by its digest) and was deleted at `since` or later, if any. */
  private takenSince(digest: string, since: number): string | undefined {
    return this.sql
      .exec<{ job_id: string }>("SELECT job_id FROM tombstones WHERE key_digest = ? AND deleted_at >= ? LIMIT 1", digest, since)
      .toArray()[0]?.job_id;
  }

  private holdKey(key: string, jobId: string, bodyHash: string | null): void {
    this.sql.exec("INSERT INTO idempotency (key, job_id, body_hash) VALUES (?, ?, ?)", key, jobId, bodyHash ?? "");
  }

  /**
   * Forgets a deleted job for good: its row and its idempotency key; leaves a tombstone (with a
   * digest of that key, see `upsert`), and prunes expired ones. `usage`: the job's final usage,
   * counted in the tenant's totals when a snapshot carrying it never arrived. `discarded`: the job
   * was one its submit never answered with (RunObject.discard), which its tombstone says (`knows`).
   */
  async remove(jobId: string, usage?: Counted, discarded = false): Promise<void> {
    const key = this.sql.exec<{ key: string }>("SELECT key FROM idempotency WHERE job_id = ?", jobId).toArray()[0]?.key;
    const digest = key === undefined ? null : await keyDigest(key);
    const now = Date.now();
    this.change(() => {
      const last = this.sql
        .exec<{ status: Status; body: string } & Counted>(`SELECT status, body, ${SNAPSHOT_USAGE} FROM jobs WHERE job_id = ?`, jobId)
        .toArray()[0];
      if (last) {
        if (usage) addUsage(this.sql, usageColumns(last), usage);
        this.record("deleted", last.status, last.body);
      }
      this.sql.exec("DELETE FROM jobs WHERE job_id = ?", jobId);
      this.sql.exec("DELETE FROM idempotency WHERE job_id = ?", jobId);
      this.sql.exec("INSERT OR IGNORE INTO tombstones (job_id, deleted_at, key_digest, discarded) VALUES (?, ?, ?, ?)", jobId, now, digest, discarded ? 1 : 0);
      this.sql.exec(
        "DELETE FROM tombstones WHERE job_id IN (SELECT job_id FROM tombstones WHERE deleted_at < ? ORDER BY deleted_at LIMIT ?)",
        now - TOMBSTONE_TTL_MS,
        TOMBSTONES_PRUNED_PER_REMOVAL,
      );
    });
  }

  private apply(job: Job, version: number, known = this.held(job.job_id)): void {
    const { deleted, snapshot: held } = known;
    if (deleted) return;
    const body = JSON.stringify(job);
    const now = Date.now();
    if (!held) {
      this.sql.exec(
        "INSERT INTO jobs (seq, job_id, status, session_id, version, body, fed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        this.nextSeq(now),
        job.job_id,
        job.status,
        job.session_id,
        version,
        body,
        now,
      );
      addUsage(this.sql, NO_USAGE, counted(job));
      this.record("run", null, body);
    } else if (version > held.version) {
      addUsage(this.sql, held.usage, counted(job));
      // The feed hears every status change, and progress at most once a second.
      const told = job.status !== held.status || now - held.fed_at >= FEED_PROGRESS_MS;
      this.sql.exec(
        "UPDATE jobs SET status = ?, session_id = ?, version = ?, body = ?, fed_at = ? WHERE job_id = ?",
        job.status,
        job.session_id,
        version,
        body,
        told ? now : held.fed_at,
        job.job_id,
      );
      if (told) this.record("run", held.status, body);
    }
  }

  /**
   * The sequence number of a job first heard of now (see SEQ_SCALE). The last one given is kept
   * in memory (this object is its only writer), read once. One given in a change that was rolled
   * back is not given again: numbers need only grow.
   */
  private nextSeq(now: number): number {
    this.lastSeq ??= this.sql.exec<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").toArray()[0]?.seq ?? 0;
    // This object's index among its tenant's shards: 0 for the tenant's first, or only, one.
    this.shard ??= shardIndex(tenantOf(this.ctx) ?? "");
    this.lastSeq = Math.max(now * SEQ_SCALE + this.shard, this.lastSeq + SEQ_STEP);
    return this.lastSeq;
  }

  /** Writes a change to the feed's log (inside the caller's transaction), to be told once it commits. */
  private record(kind: Change["kind"], previous: Status | null, job: string): void {
    this.written.push(this.log.append(kind, previous, job));
  }

  /** Runs a change of the projection in one transaction; once it commits, the feed's watchers hear what it wrote. */
  private change<T>(body: () => T): T {
    this.written = [];
    try {
      const result = this.ctx.storage.transactionSync(body);
      if (this.written.length > 0 && this.feed.size > 0) this.feed.notify(this.written);
      return result;
    } finally {
      this.written = [];
    }
  }

  /**
   * The live feed from `after` (a Last-Event-ID), or from now when null. A position older than
   * the log keeps, or ahead of its newest change (a position this log never gave: its client's
   * picture is of another), starts with `reset`: the client lists again.
   */
  watch(filter: RunFilter, after: number | null): { body: ReadableStream<Uint8Array> } {
    const head = this.log.head();
    const reset = after !== null && (after < this.log.prunedThrough() || after > head);
    return { body: this.feed.open(filter, after === null || reset ? head : after, reset, head) };
  }

  /** The feed's newest position: where a watcher from now starts. */
  feedHead(): number {
    return this.log.head();
  }

  /**
   * What is held of a job, in one read (every upsert asks): whether it was deleted (its tombstone
   * stands), and the version, status and usage (SNAPSHOT_USAGE) of its snapshot.
   */
  private held(jobId: string): { deleted: boolean; snapshot?: { version: number; status: Status; fed_at: number; usage: Counted } } {
    const row = this.sql
      .exec<{ deleted: number; version: number | null; status: Status; fed_at: number } & Counted>(
        `SELECT EXISTS (SELECT 1 FROM tombstones WHERE job_id = ?1) AS deleted, version, status, fed_at, ${SNAPSHOT_USAGE}
         FROM (SELECT 1) LEFT JOIN jobs ON job_id = ?1`,
        jobId,
      )
      .one();
    return {
      deleted: row.deleted === 1,
      snapshot: row.version === null ? undefined : { version: row.version, status: row.status, fed_at: row.fed_at, usage: usageColumns(row) },
    };
  }

  /** A page of the list by status and session, or by labels (src/tenant/listing.ts). */
  list(query: ListFilter): ListPage {
    return listPage(this.sql, query);
  }

  /**
   * A page of a list narrowed by tags or metadata. It has a name of its own so that, while a
   * deploy is under way, a projection from before labels refuses it (the Worker answers 503 and
   * the client retries) instead of answering it unfiltered through `list`.
   */
  listByLabels(query: ListFilter): ListPage {
    return this.list(query);
  }

  /**
   * Counts one submit of a scoped token, unless it has submitted `max` jobs already. The submit's
   * idempotency key, if it has one, is kept with the count (`spendSubmitUnderKey`), and so is the
   * job it is making, which is asked about a minute on unless the submit says how it ended first.
   */
  async spendSubmit(tokenId: string, max: number, expiresAtMs: number, key: string | null = null, spentOn?: SpentOn): Promise<boolean> {
    const askAt = spendSubmit(this.ctx.storage, tokenId, max, expiresAtMs, key, spentOn);
    if (askAt === false) return false;
    if (askAt !== null) await ringBy(this.ctx.storage, askAt, limits(this.env).alarmDelayMs);
    return true;
  }

  /**
   * A submit under `key` whose first count was refused, counted again (as `spendSubmit`), or
   * refused for good; or told to wait, as one under the same key was counted lately and not given
   * back: it may be under way. One call, so that no count given back falls between the two looks.
   */
  async spendSubmitUnderKey(tokenId: string, max: number, expiresAtMs: number, key: string, spentOn?: SpentOn): Promise<"spent" | "under_way" | "refused"> {
    if (await this.spendSubmit(tokenId, max, expiresAtMs, key, spentOn)) return "spent";
    return submitUnderWay(this.sql, tokenId, key) ? "under_way" : "refused";
  }

  /**
   * A counted submit under `key` is no longer under way: it made its job, which holds the key from
   * now on (as any submit's idempotency key is held), or its count is given back. So once that job
   * is deleted, a submit sent again under the key past the limit is refused at once.
   */
  releaseSubmitKey(tokenId: string, key: string): void {
    releaseSubmitKey(this.sql, tokenId, key);
  }

  /** A counted submit made its job: its key is released (as `releaseSubmitKey`), and its job need not be asked about. */
  submitMade(tokenId: string, key: string | null, jobId: string): void {
    submitMade(this.sql, tokenId, key, jobId);
  }

  /** How many submits a scoped token has spent here: 0 for one never seen, or expired. */
  submitsSpent(tokenId: string): number {
    return submitsSpent(this.sql, tokenId);
  }

  /** Gives a submit back, with the key it came under: the job it was spent on (`jobId`) was never made. */
  refundSubmit(tokenId: string, key: string | null = null, jobId?: string): void {
    refundSubmit(this.ctx.storage, tokenId, key, jobId);
  }

  /**
   * The ids of the jobs a bulk operation's filter matches, newest first, at most `limit`
   * (one more tells the caller there are more).
   */
  matching(filter: BulkFilter, limit: number): string[] {
    return matchingJobIds(this.sql, filter, limit);
  }

  /**
   * The same, for a filter that names metadata. It has a name of its own so that, while a deploy
   * is under way, a projection from before it refuses it (the Worker answers 503) instead of
   * matching with the metadata left out, and a bulk delete reaching far more jobs than asked.
   */
  matchingByMetadata(filter: BulkFilter, limit: number): string[] {
    return this.matching(filter, limit);
  }

  stats(): Stats {
    const by_status = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<Status, number>;
    for (const row of this.sql.exec<{ status: Status; n: number }>("SELECT status, n FROM status_counts")) {
      by_status[row.status] = row.n;
    }
    return { total_jobs: Object.values(by_status).reduce((a, b) => a + b, 0), by_status, ...usageStats(this.sql) };
  }

  private snapshot(jobId: string): Job | null {
    const row = this.sql.exec<{ body: string }>("SELECT body FROM jobs WHERE job_id = ?", jobId).toArray()[0];
    return row ? (JSON.parse(row.body) as Job) : null;
  }
}
