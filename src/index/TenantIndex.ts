/**
 * One Durable Object per tenant: the projection of its jobs that list and stats read, and its
 * idempotency keys. RunObjects push version-guarded snapshots here; a tombstone keeps a deleted
 * job from ever coming back through a late update.
 */
import { DurableObject } from "cloudflare:workers";
import type { Job } from "../schemas";
import { migrate } from "../storage/migrations";
import { isTerminal, STATUSES, type Status } from "../run/transitions";
import { runObjectName } from "../ids";
import { limits, type Limits } from "../config";

/**
 * While jobs wait in line, the index wakes the first of them again this often, in case a wake-up
 * was lost. Waiting jobs set no alarm of their own: the line costs one alarm, however long it is.
 */
const WAKE_RETRY_MS = 60_000;

/** Trigger bodies that keep the tallies: count the new row in, and the old row out. */
const COUNT_NEW = `
  INSERT INTO status_counts (status, n) VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1;
  INSERT INTO session_counts (session_id, status, n) SELECT NEW.session_id, NEW.status, 1 WHERE NEW.session_id IS NOT NULL
    ON CONFLICT (session_id, status) DO UPDATE SET n = n + 1;`;
const UNCOUNT_OLD = `
  UPDATE status_counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE session_counts SET n = n - 1 WHERE session_id = OLD.session_id AND status = OLD.status;`;

export const INDEX_MIGRATIONS = [
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
  // Run slots: a job holds a row from its first attempt to start until it ends; `running` ones
  // count against the tenant's limit, waiting ones start in the order they were submitted.
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
] as const;

export interface Admission {
  job: Job;
  idempotency_key: string | null;
  body_hash: string | null;
}

export type AdmitResult =
  | { admitted: true }
  | { admitted: false; job_id: string; same_body: boolean; job: Job | null };

export interface ListQuery {
  status?: Status;
  session_id?: string;
  page: number;
  page_size: number;
  /** Keyset position: only jobs admitted before this sequence number. */
  before?: number;
}

export interface ListPage {
  jobs: Job[];
  total: number;
  /** Sequence number to continue from, or null at the end. */
  next: number | null;
}

export class TenantIndex extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly limits: Limits;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.limits = limits(env);
    migrate(ctx.storage, INDEX_MIGRATIONS);
  }

  /** Registers a new job, unless its idempotency key already names one: then that job is returned. */
  admit(entry: Admission): AdmitResult {
    return this.ctx.storage.transactionSync((): AdmitResult => {
      if (entry.idempotency_key !== null) {
        const held = this.sql
          .exec<{ job_id: string; body_hash: string }>("SELECT job_id, body_hash FROM idempotency WHERE key = ?", entry.idempotency_key)
          .toArray()[0];
        if (held) {
          return { admitted: false, job_id: held.job_id, same_body: held.body_hash === entry.body_hash, job: this.snapshot(held.job_id) };
        }
        this.sql.exec(
          "INSERT INTO idempotency (key, job_id, body_hash) VALUES (?, ?, ?)",
          entry.idempotency_key,
          entry.job.job_id,
          entry.body_hash ?? "",
        );
      }
      this.insert(entry.job, 1);
      return { admitted: true };
    });
  }

  /** Undoes an admission whose job could not be created. */
  forget(jobId: string): void {
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM jobs WHERE job_id = ?", jobId);
      this.sql.exec("DELETE FROM slots WHERE job_id = ?", jobId);
      this.sql.exec("DELETE FROM idempotency WHERE job_id = ?", jobId);
    });
  }

  /**
   * Lets a queued job start if the tenant has a free slot and no job submitted before it is
   * waiting; otherwise it takes its place in line (by submission) and is woken when its turn
   * comes. Idempotent: a job already running keeps its slot.
   */
  async acquire(jobId: string): Promise<boolean> {
    const granted = this.ctx.storage.transactionSync(() => {
      let slot = this.sql.exec<{ seq: number; running: number }>("SELECT seq, running FROM slots WHERE job_id = ?", jobId).toArray()[0];
      if (!slot) {
        const job = this.sql.exec<{ seq: number }>("SELECT seq FROM jobs WHERE job_id = ?", jobId).toArray()[0];
        if (!job) return false; // deleted meanwhile
        this.sql.exec("INSERT INTO slots (job_id, seq) VALUES (?, ?)", jobId, job.seq);
        slot = { seq: job.seq, running: 0 };
      }
      if (slot.running) return true;
      if (!this.mayStart(slot.seq)) return false;
      this.sql.exec("UPDATE slots SET running = 1 WHERE job_id = ?", jobId);
      return true;
    });
    if (!granted) await this.keepWaking();
    return granted;
  }

  /** A slot is free for the job in line at `seq`: fewer jobs wait ahead of it than slots are free. */
  private mayStart(seq: number): boolean {
    const free = this.limits.maxRunningPerTenant - this.runningCount();
    if (free <= 0) return false;
    // Only whether `free` jobs are ahead matters: counting further would cost as much as the line is long.
    const ahead = this.sql
      .exec<{ n: number }>("SELECT COUNT(*) AS n FROM (SELECT 1 FROM slots WHERE running = 0 AND seq < ? LIMIT ?)", seq, free)
      .one().n;
    return ahead < free;
  }

  /** Applies a job snapshot if it is newer than the one held; ignored for deleted jobs. */
  async upsert(job: Job, version: number): Promise<void> {
    const ended = isTerminal(job.status);
    this.ctx.storage.transactionSync(() => {
      if (ended) this.sql.exec("DELETE FROM slots WHERE job_id = ?", job.job_id);
      if (this.sql.exec("SELECT 1 FROM tombstones WHERE job_id = ?", job.job_id).toArray().length > 0) return;
      const held = this.sql.exec<{ version: number }>("SELECT version FROM jobs WHERE job_id = ?", job.job_id).toArray()[0];
      if (!held) this.insert(job, version);
      else if (version > held.version) {
        this.sql.exec(
          "UPDATE jobs SET status = ?, session_id = ?, version = ?, body = ? WHERE job_id = ?",
          job.status,
          job.session_id,
          version,
          JSON.stringify(job),
          job.job_id,
        );
      }
    });
    if (ended) await this.wakeWaiting();
  }

  /** Forgets a deleted job for good: its row, its idempotency key, its slot; leaves a tombstone. */
  async remove(jobId: string): Promise<void> {
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM slots WHERE job_id = ?", jobId);
      this.sql.exec("DELETE FROM jobs WHERE job_id = ?", jobId);
      this.sql.exec("DELETE FROM idempotency WHERE job_id = ?", jobId);
      this.sql.exec("INSERT OR IGNORE INTO tombstones (job_id, deleted_at) VALUES (?, ?)", jobId, Date.now());
    });
    await this.wakeWaiting();
  }

  /**
   * Tells the jobs first in line that a slot is free, so that they start. A place whose job
   * answers that it is not waiting (it has ended, and its last update is still on its way) is
   * given up, and the next in line is told instead. A wake that fails is sent again by the alarm.
   */
  private async wakeWaiting(): Promise<void> {
    const tenant = this.tenant();
    for (let round = 0; round < 3; round++) {
      const free = this.limits.maxRunningPerTenant - this.runningCount();
      if (free <= 0) break;
      const next = this.sql.exec<{ job_id: string }>("SELECT job_id FROM slots WHERE running = 0 ORDER BY seq LIMIT ?", free).toArray();
      const answers = await Promise.allSettled(next.map((s) => this.env.RUNS.getByName(runObjectName(tenant, s.job_id)).wake()));
      const gone = next.filter((_s, i) => {
        const answer = answers[i];
        return answer.status === "fulfilled" && !answer.value;
      });
      for (const s of gone) this.sql.exec("DELETE FROM slots WHERE job_id = ? AND running = 0", s.job_id);
      if (gone.length === 0) break;
    }
    await this.keepWaking();
  }

  /** While anyone waits in line, the alarm stays set. */
  private async keepWaking(): Promise<void> {
    const waiting = this.sql.exec("SELECT 1 FROM slots WHERE running = 0 LIMIT 1").toArray().length > 0;
    if (!waiting) return;
    if ((await this.ctx.storage.getAlarm()) === null) await this.wakeLater();
  }

  private wakeLater(): Promise<void> {
    return this.ctx.storage.setAlarm(Date.now() + WAKE_RETRY_MS + this.limits.alarmDelayMs);
  }

  /** Wakes the first in line again; it never fails, so that it is never given up. */
  async alarm(): Promise<void> {
    try {
      await this.wakeWaiting();
    } catch (error) {
      console.error("waking the line failed; trying again later", error);
      await this.wakeLater();
    }
  }

  private runningCount(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM slots WHERE running = 1").one().n;
  }

  private tenant(): string {
    const name = this.ctx.id.name;
    if (!name) throw new Error("TenantIndex must be addressed by its tenant's name");
    return name;
  }

  list(query: ListQuery): ListPage {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (query.status) {
      where.push("status = ?");
      params.push(query.status);
    }
    if (query.session_id !== undefined) {
      where.push("session_id = ?");
      params.push(query.session_id);
    }
    // The tallies have the same status and session columns as the jobs: the filter serves both.
    const filter = where.length ? `WHERE ${where.join(" AND ")}` : "";
    const tallies = query.session_id === undefined ? "status_counts" : "session_counts";
    const total = this.sql.exec<{ n: number }>(`SELECT COALESCE(SUM(n), 0) AS n FROM ${tallies} ${filter}`, ...params).one().n;

    if (query.before !== undefined) {
      where.push("seq < ?");
      params.push(query.before);
    }
    const pageFilter = where.length ? `WHERE ${where.join(" AND ")}` : "";
    const offset = query.before !== undefined ? 0 : (query.page - 1) * query.page_size;
    const rows = this.sql
      .exec<{ seq: number; body: string }>(
        // The offset is walked on a narrow index (status, session or seq) and only the page's
        // rows are read whole: a deep page skips index entries, not job bodies.
        `SELECT seq, body FROM jobs WHERE seq IN (SELECT seq FROM jobs ${pageFilter} ORDER BY seq DESC LIMIT ? OFFSET ?)
         ORDER BY seq DESC`,
        ...params,
        query.page_size + 1,
        offset,
      )
      .toArray();
    const page = rows.slice(0, query.page_size);
    return {
      jobs: page.map((r) => JSON.parse(r.body) as Job),
      total,
      next: rows.length > query.page_size ? page[page.length - 1].seq : null,
    };
  }

  stats(): { total_jobs: number; by_status: Record<Status, number> } {
    const by_status = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<Status, number>;
    for (const row of this.sql.exec<{ status: Status; n: number }>("SELECT status, n FROM status_counts")) {
      by_status[row.status] = row.n;
    }
    return { total_jobs: Object.values(by_status).reduce((a, b) => a + b, 0), by_status };
  }

  private snapshot(jobId: string): Job | null {
    const row = this.sql.exec<{ body: string }>("SELECT body FROM jobs WHERE job_id = ?", jobId).toArray()[0];
    return row ? (JSON.parse(row.body) as Job) : null;
  }

  private insert(job: Job, version: number): void {
    this.sql.exec(
      "INSERT INTO jobs (job_id, status, session_id, version, body) VALUES (?, ?, ?, ?, ?)",
      job.job_id,
      job.status,
      job.session_id,
      version,
      JSON.stringify(job),
    );
  }
}
