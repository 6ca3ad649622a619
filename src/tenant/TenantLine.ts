/**
 * One Durable Object per tenant: its line. Every job of the tenant that waits to start or holds
 * a run slot has a place here. Higher priority starts first, first in first out within one
 * priority, at most MAX_RUNNING_PER_TENANT at once and MAX_RUNNING_PER_KEY per concurrency key.
 *
 * A waiting job costs nothing: it has no alarm and makes no call. The line's one alarm starts
 * delayed jobs at their time, fails jobs whose queue TTL passed, and tells the next jobs in line
 * that they hold a slot (the wake-up is the grant: the job never calls back to ask).
 */
import { DurableObject } from "cloudflare:workers";
import { logFailure } from "../log";
import { limits, type Limits } from "../config";
import { giveUpNameless, rememberTenant, runObjectName, tenantOf } from "../ids";
import type { PlaceRequest } from "../run/job";
import { DEFAULT_PRIORITY } from "../schemas";
import { migrate } from "../storage/migrations";
import { ringBy, ringTime } from "../storage/alarm";
import { DUE_TIMES, LINE_MIGRATIONS, type PlaceState } from "./lineSchema";
import { BATCH, Places } from "./places";
import { lineShards, tenantOfObject } from "./shards";

/** A job that the line could not reach (not created yet) is tried again this much later. */
const MISSING_RETRY_MS = 2_000;
/**
 * A job still missing this long after it joined never will be: its place is given up. A job
 * granted its slot as it joined is asked once, this long after, whether it was made (a submit cut
 * short between its place and its job made none, and nothing else would free that slot).
 */
const MISSING_GRACE_MS = 60_000;
/** While the line is full and jobs wait, slot holders are asked this often whether they still run. */
const AUDIT_MS = 10 * 60_000;

export type JoinResult = { ok: true; granted: boolean } | { ok: false; limit: number };

/** The contract's error for a job whose queue TTL passed before it started. */
export const expiredMessage = (ttlSeconds: number) => `Expired: not started within ${ttlSeconds} s`;

/**
 * One line's limits: with LINE_SHARDS lines, each runs and holds its share of the tenant's
 * (rounded down, at least one). A concurrency key lives in one line, so its limit is whole.
 */
function lineLimits(env: Env): Limits {
  const all = limits(env);
  const lines = lineShards(env);
  return {
    ...all,
    maxRunningPerTenant: Math.max(1, Math.floor(all.maxRunningPerTenant / lines)),
    maxQueuedPerTenant: Math.max(1, Math.floor(all.maxQueuedPerTenant / lines)),
  };
}

export class TenantLine extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly limits: Limits;
  private readonly places: Places;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.limits = lineLimits(env);
    this.places = new Places(this.sql, this.limits);
    migrate(ctx.storage, LINE_MIGRATIONS);
    rememberTenant(ctx);
  }

  // ---- RPC ----------------------------------------------------------------------------

  /**
   * Takes a place for a new job. It is granted a slot at once when one is free, its key allows,
   * and no one in line would start before it; then the job is created running, and is asked
   * MISSING_GRACE_MS later whether it was (the line's alarm rings by then). A job that would wait
   * is refused past the tenant's queued limit, and nothing is stored.
   */
  async join(request: PlaceRequest): Promise<JoinResult> {
    const now = Date.now();
    // What the new place asks of the alarm: nothing, a time it must ring by, or a full reckoning.
    let alarm: number | "all" | null = null;
    const result = this.ctx.storage.transactionSync((): JoinResult => {
      const held = this.places.get(request.job_id);
      if (held) return { ok: true, granted: held.state === "running" };
      const delayed = request.start_at !== null && request.start_at > now;
      const counts = this.places.counts();
      if (!delayed && this.places.mayStartNow(request, counts.running)) {
        alarm = now + MISSING_GRACE_MS;
        this.places.insert(request, "running", now, null, null, alarm);
        return { ok: true, granted: true };
      }
      if (counts.scheduled + counts.waiting >= this.limits.maxQueuedPerTenant) return { ok: false, limit: this.limits.maxQueuedPerTenant };
      const eligibleAt = delayed ? request.start_at! : now;
      const expiresAt = request.ttl_s === null ? null : eligibleAt + request.ttl_s * 1000;
      this.places.insert(request, delayed ? "scheduled" : "waiting", null, expiresAt);
      // The first job to wait while every slot is taken starts the audits of the slots' holders.
      if (!delayed && counts.waiting === 0 && counts.running >= this.limits.maxRunningPerTenant) alarm = "all";
      else alarm = delayed ? request.start_at : expiresAt;
      return { ok: true, granted: false };
    });
    if (alarm === "all") await this.armAlarm();
    else if (alarm !== null) await this.ringBy(alarm);
    return result;
  }

  /** The job has ended, was deleted, or was never created: its place and any slot are freed. */
  async leave(jobId: string): Promise<void> {
    const freed = this.places.get(jobId)?.state === "running";
    this.places.remove(jobId);
    if (freed) await this.armAlarm();
  }

  /**
   * A job a person answered waits for a run slot again, ahead of the jobs of its priority that
   * have not started yet; the line's alarm tells it when it holds one. A place granted since the
   * answer (`answeredAt`) means this is a repeat of a call that already landed: it is kept.
   */
  async rejoin(request: PlaceRequest, answeredAt: number): Promise<void> {
    this.ctx.storage.transactionSync(() => {
      const held = this.sql
        .exec<{ state: PlaceState; granted_at: number | null }>("SELECT state, granted_at FROM places WHERE job_id = ?", request.job_id)
        .toArray()[0];
      if (held?.state === "running" && (held.granted_at ?? 0) >= answeredAt) return;
      this.places.remove(request.job_id);
      const first = this.sql.exec<{ seq: number | null }>("SELECT MIN(seq) AS seq FROM places").one().seq;
      this.places.insert(request, "waiting", null, null, first === null ? null : first - 1);
    });
    await this.armAlarm();
  }

  /**
   * Each waiting job's 1-based place among the jobs that could start next (null for jobs that
   * are not waiting: delayed, running, or unknown here).
   */
  positions(jobIds: string[]): Record<string, number | null> {
    return this.places.positions(jobIds);
  }

  /**
   * Takes over places kept by the projection before the line had its own object, in their
   * order: slot holders keep their slots; the others wait at the default priority.
   */
  async adopt(places: { job_id: string; running: boolean }[]): Promise<void> {
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      for (const place of places) {
        if (this.places.get(place.job_id)) continue;
        const request = { job_id: place.job_id, priority: DEFAULT_PRIORITY, concurrency_key: null, start_at: null, ttl_s: null };
        this.places.insert(request, place.running ? "running" : "waiting", place.running ? now : null, null);
      }
    });
    await this.armAlarm();
  }

  /** How many places of each state the line holds: for operators and tests. */
  counts(): Record<PlaceState, number> {
    return this.places.counts();
  }

  // ---- the alarm ----------------------------------------------------------------------------

  /** Never fails, so that the platform never gives it up: whatever went wrong is tried again. */
  async alarm(): Promise<void> {
    if (tenantOf(this.ctx) === null) return giveUpNameless(this.ctx, Date.now() + this.limits.retryBaseMs + this.limits.alarmDelayMs);
    try {
      await this.runDueWork();
    } catch (error) {
      logFailure("the line's alarm failed; trying again later", error);
      await this.ctx.storage.setAlarm(Date.now() + this.limits.retryBaseMs + this.limits.alarmDelayMs);
    }
  }

  private async runDueWork(): Promise<void> {
    this.promoteDelayed();
    this.expireOverdue();
    await this.tellExpired();
    // A job that answers it is not waiting frees its slot at once: grant again, a few rounds.
    for (let round = 0; round < 3; round++) {
      this.grantFreeSlots();
      if (!(await this.tellGranted())) break;
    }
    await this.auditSlots();
    await this.armAlarm();
  }

  /** Delayed jobs whose time has come join the line. */
  private promoteDelayed(): void {
    this.sql.exec(DUE_TIMES.promoteDue, Date.now());
  }

  /** Jobs whose TTL passed leave the line; each is then told to fail. */
  private expireOverdue(): void {
    this.sql.exec(DUE_TIMES.expireOverdue, Date.now());
  }

  private async tellExpired(): Promise<void> {
    const due = this.places.untold("expired");
    const answers = await Promise.allSettled(due.map((p) => this.run(p.job_id).expire(expiredMessage(p.ttl_s ?? 0))));
    due.forEach((p, i) => {
      if (answers[i].status === "fulfilled") this.sql.exec("DELETE FROM places WHERE job_id = ? AND state = 'expired'", p.job_id);
      else this.places.retryLater(p.job_id);
    });
  }

  /** Gives each free slot to the next job in line whose key allows it. */
  private grantFreeSlots(): void {
    let free = this.limits.maxRunningPerTenant - this.places.counts().running;
    const now = Date.now();
    while (free > 0) {
      const next = this.places.nextInLine(this.places.blockedKeys());
      if (!next) return;
      this.sql.exec("UPDATE places SET state = 'running', granted_at = ?, told = 0, retry_at = NULL WHERE job_id = ?", now, next.job_id);
      free--;
    }
  }

  /**
   * Tells the jobs granted a slot that they hold it. A job that is no longer waiting (it ended
   * meanwhile) gives its slot back; one not created yet is tried again a moment later. True when
   * a slot came free.
   */
  private async tellGranted(): Promise<boolean> {
    const due = this.places.untold("running");
    const answers = await Promise.allSettled(due.map((p) => this.run(p.job_id).start()));
    let freed = false;
    const now = Date.now();
    due.forEach((p, i) => {
      const answer = answers[i];
      if (answer.status === "rejected") return this.places.retryLater(p.job_id);
      switch (answer.value) {
        case "started":
        case "running":
          this.sql.exec("UPDATE places SET told = 1, retry_at = NULL WHERE job_id = ? AND state = 'running'", p.job_id);
          return;
        case "not_waiting":
          freed = true;
          this.places.remove(p.job_id);
          return;
        case "missing":
          freed = true;
          if (now - p.joined_at >= MISSING_GRACE_MS) this.places.remove(p.job_id);
          else {
            this.sql.exec(
              "UPDATE places SET state = 'scheduled', start_at = ?, told = 1, granted_at = NULL WHERE job_id = ? AND state = 'running'",
              now + MISSING_RETRY_MS,
              p.job_id,
            );
          }
      }
    });
    return freed;
  }

  /**
   * While the line is full and jobs wait, a slot kept by a job that no longer runs (its release
   * lost with a submit that never finished) would block the line for good: now and then each
   * holder is asked whether it still runs.
   */
  private async auditSlots(): Promise<void> {
    if (!this.auditDue()) return;
    this.sql.exec("INSERT INTO audit (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at", Date.now());
    const holders = this.sql
      .exec<{ job_id: string }>("SELECT job_id FROM places WHERE state = 'running' AND told = 1 AND granted_at < ? LIMIT ?", Date.now() - MISSING_GRACE_MS, BATCH)
      .toArray();
    const answers = await Promise.allSettled(holders.map((p) => this.run(p.job_id).holdsSlot()));
    holders.forEach((p, i) => {
      const answer = answers[i];
      if (answer.status === "fulfilled" && !answer.value) this.sql.exec("DELETE FROM places WHERE job_id = ? AND state = 'running'", p.job_id);
    });
  }

  private auditDue(): boolean {
    return this.fullWithJobsWaiting() && Date.now() - (this.lastAuditAt() ?? 0) >= AUDIT_MS;
  }

  /** Every slot is taken and jobs wait: when slot holders are audited. */
  private fullWithJobsWaiting(counts = this.places.counts()): boolean {
    return counts.running >= this.limits.maxRunningPerTenant && counts.waiting > 0;
  }

  private lastAuditAt(): number | null {
    return this.sql.exec<{ at: number }>("SELECT at FROM audit WHERE id = 1").toArray()[0]?.at ?? null;
  }

  /** The earliest due work: a delayed start, an expiry, a job to tell, a free slot, an audit. */
  private async armAlarm(): Promise<void> {
    const now = Date.now();
    const next = this.sql.exec<Record<"start_at" | "expires_at" | "tell_at", number | null>>(DUE_TIMES.next, now).one();
    const times = [next.start_at, next.expires_at, next.tell_at].filter((at) => at !== null);
    const counts = this.places.counts();
    if (counts.running < this.limits.maxRunningPerTenant && this.places.nextInLine(this.places.blockedKeys())) times.push(now);
    if (this.fullWithJobsWaiting(counts)) times.push((this.lastAuditAt() ?? now) + AUDIT_MS);
    if (times.length === 0) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(ringTime(Math.min(...times), this.limits.alarmDelayMs, now));
  }

  /**
   * A new place that waits is due at `at` (its start, or its expiry), and changes no other due
   * time: a job that could start now would have been granted its slot, and told places are not
   * new. So the alarm, set for what was due before, need only be brought forward.
   */
  private ringBy(at: number): Promise<void> {
    return ringBy(this.ctx.storage, at, this.limits.alarmDelayMs);
  }

  private run(jobId: string) {
    return this.env.RUNS.getByName(runObjectName(tenantOfObject(tenantOf(this.ctx)!), jobId));
  }
}
