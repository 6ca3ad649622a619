/**
 * A retry copies the old job's finished outputs under the new job's prefix before the new job
 * exists. Should the retry stop there (its Worker stopped, its client gone, a deploy), the copies
 * would be no job's: never listed, never deleted, left out of a bulk erasure. So, before each copy,
 * the new job's own object holds its prefix (`hold`): a key-value entry and an alarm, and no table,
 * so that the job is still made into an empty database. The job made, the hold is dropped (`take`).
 * Not made by the time the hold lapses (HOLD_MS after the last copy began), the alarm purges the
 * prefix (`lapse`), and the hold stays lapsed a day, refusing a job that would count on the copies.
 */
import type { Limits } from "../config";
import { logFailure } from "../log";
import { outputPrefix, purgePrefix } from "../storage/blobs";

const HOLD = "prefix_hold";
/** How long after the last copy began a retry has to make its job. */
export const HOLD_MS = 3_600_000;
/** How long a lapsed hold is kept, refusing the retry that took it. */
const LAPSED_KEPT_MS = 86_400_000;

/** Why a retry whose hold lapsed is refused (500): its copies are gone, and another retry makes them again. */
export const HOLD_LAPSED = "The retry took too long to make its job: its copies of the old job's outputs were removed. Send it again.";

export interface PrefixHold {
  tenant: string;
  job_id: string;
  until: number;
  lapsed: boolean;
}

export class Hold {
  constructor(
    private readonly ctx: DurableObjectState,
    private readonly env: Env,
    private readonly limits: Limits,
  ) {}

  private get current(): PrefixHold | undefined {
    return this.ctx.storage.kv.get<PrefixHold>(HOLD);
  }

  /** Holds (or holds for longer) the prefix of the job `jobId` not made yet. False once lapsed: its copies are gone. */
  async hold(tenant: string, jobId: string): Promise<boolean> {
    if (this.current?.lapsed) return false;
    const until = Date.now() + HOLD_MS;
    this.ctx.storage.kv.put(HOLD, { tenant, job_id: jobId, until, lapsed: false } satisfies PrefixHold);
    await this.ctx.storage.setAlarm(until + this.limits.alarmDelayMs);
    return true;
  }

  /** Whether the job may be made: not when its hold lapsed and its copies were purged. */
  get lapsed(): boolean {
    return this.current?.lapsed ?? false;
  }

  /** The job is made (inside its transaction): its prefix is its own now. True when a hold was dropped. */
  take(): boolean {
    return this.ctx.storage.kv.delete(HOLD);
  }

  /**
   * The alarm of an object whose job was never made: a hold past its time is lapsed, its copies
   * purged; a hold lapsed a day ago goes, with everything the object stored.
   */
  async lapse(): Promise<void> {
    const held = this.current;
    if (!held) return;
    const now = Date.now();
    if (held.lapsed) {
      if (now >= held.until) await this.ctx.storage.deleteAll();
      else await this.ctx.storage.setAlarm(held.until + this.limits.alarmDelayMs);
      return;
    }
    if (now < held.until) {
      // Held for longer since this alarm was set: a retry is still copying.
      await this.ctx.storage.setAlarm(held.until + this.limits.alarmDelayMs);
      return;
    }
    try {
      const removed = await purgePrefix(this.env.OUTPUTS, outputPrefix(held.tenant, held.job_id));
      logFailure("a retry stopped before making its job; its copies of the old job's outputs are purged", `${removed} objects removed`, {
        job_id: held.job_id,
        tenant: held.tenant,
      });
      this.ctx.storage.kv.put(HOLD, { ...held, until: now + LAPSED_KEPT_MS, lapsed: true } satisfies PrefixHold);
      await this.ctx.storage.setAlarm(now + LAPSED_KEPT_MS + this.limits.alarmDelayMs);
    } catch (error) {
      logFailure("purging a lapsed retry's copies failed; trying again later", error, { job_id: held.job_id, tenant: held.tenant });
      await this.ctx.storage.setAlarm(now + this.limits.retryBaseMs + this.limits.alarmDelayMs);
    }
  }
}
