/**
 * The reads of a tenant projection's lists: a page by status and session, or narrowed by tags
 * and metadata through their label rows, and the jobs a bulk operation's filter matches.
 */
import type { Job } from "../schemas";
import type { Status } from "../run/transitions";
import type { RunFilter } from "./feed";

/** A page of the list, as the projection reads it. */
export interface ListFilter extends RunFilter {
  page: number;
  page_size: number;
  /** Keyset position: only jobs admitted before this sequence number. */
  before?: number;
}

export interface ListPage {
  jobs: Job[];
  /** Each job's sequence number: what the shards of a tenant's projection are merged by. */
  seqs: number[];
  total: number;
  /** Sequence number to continue from, or null at the end. */
  next: number | null;
}

/** What a bulk operation's filter may name. */
export interface BulkFilter {
  status?: Status;
  session_id?: string;
  tags?: string[];
  /** Exact values of the job's metadata (one user's jobs, say). */
  metadata?: Record<string, string>;
  created_before?: string;
}

/** A page of the list: by status and session, or narrowed by tags and metadata (`labelledList`). */
export function listPage(sql: SqlStorage, query: ListFilter): ListPage {
  const labels = labelsOf(sql, query);
  if (labels.length > 0) return labelledList(sql, query, labels);
  const { where, params } = byStatusAndSession(query);
  // The tallies have the same status and session columns as the jobs: the filter serves both.
  const filter = where.length ? `WHERE ${where.join(" AND ")}` : "";
  const tallies = query.session_id === undefined ? "status_counts" : "session_counts";
  const total = sql.exec<{ n: number }>(`SELECT COALESCE(SUM(n), 0) AS n FROM ${tallies} ${filter}`, ...params).one().n;
  return readPage(sql, query, total, "jobs", where, params);
}

/**
 * A list narrowed by tags or metadata reads the rows of its rarest label, never every job: its
 * total comes from that label's tallies when it is the only one, else from counting its rows
 * that carry the other labels too.
 */
function labelledList(sql: SqlStorage, query: ListFilter, labels: string[]): ListPage {
  const sizes = new Map(
    sql
      .exec<{ label: string; n: number }>(
        `SELECT label, SUM(n) AS n FROM label_counts WHERE label IN (${labels.map(() => "?").join(", ")}) GROUP BY label`,
        ...labels,
      )
      .toArray()
      .map((r) => [r.label, r.n]),
  );
  if (labels.some((l) => !sizes.get(l))) return { jobs: [], seqs: [], total: 0, next: null };
  const [rarest, ...others] = [...labels].sort((a, b) => sizes.get(a)! - sizes.get(b)!);
  const { where, params } = byStatusAndSession(query);
  let total: number;
  if (others.length === 0) {
    const tallies = query.session_id === undefined ? "label_counts" : "label_session_counts";
    total = sql.exec<{ n: number }>(`SELECT COALESCE(SUM(n), 0) AS n FROM ${tallies} WHERE ${["label = ?", ...where].join(" AND ")}`, rarest, ...params).one().n;
  }
  where.unshift("label = ?");
  params.unshift(rarest);
  for (const other of others) {
    where.push("EXISTS (SELECT 1 FROM labels AS other WHERE other.label = ? AND other.seq = labels.seq)");
    params.push(other);
  }
  total ??= sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM labels WHERE ${where.join(" AND ")}`, ...params).one().n;
  return readPage(sql, query, total, "labels", where, params);
}

/** The labels a filter asks for, spelled as they are stored. */
function labelsOf(sql: SqlStorage, filter: RunFilter): string[] {
  const labels = new Set((filter.tags ?? []).map((tag) => `t:${tag}`));
  for (const [key, value] of Object.entries(filter.metadata ?? {})) {
    labels.add(sql.exec<{ label: string }>("SELECT 'm:' || json_array(?, ?) AS label", key, value).one().label);
  }
  return [...labels];
}

/**
 * One page, newest first, of the rows of `source` (the jobs, or one label's rows) that meet
 * `where`: keyset from `before`, else by page number. The offset is walked on a narrow index
 * and only the page's jobs are read whole: a deep page skips index entries, not job bodies.
 */
function readPage(sql: SqlStorage, query: ListFilter, total: number, source: "jobs" | "labels", where: string[], params: (string | number)[]): ListPage {
  if (query.before !== undefined) {
    where.push("seq < ?");
    params.push(query.before);
  }
  const pageFilter = where.length ? `WHERE ${where.join(" AND ")}` : "";
  const offset = query.before !== undefined ? 0 : (query.page - 1) * query.page_size;
  const rows = sql
    .exec<{ seq: number; body: string }>(
      `SELECT seq, body FROM jobs WHERE seq IN (SELECT seq FROM ${source} ${pageFilter} ORDER BY seq DESC LIMIT ? OFFSET ?)
       ORDER BY seq DESC`,
      ...params,
      query.page_size + 1,
      offset,
    )
    .toArray();
  const page = rows.slice(0, query.page_size);
  return {
    jobs: page.map((r) => JSON.parse(r.body) as Job),
    seqs: page.map((r) => r.seq),
    total,
    next: rows.length > query.page_size ? page[page.length - 1].seq : null,
  };
}

/**
 * The ids of the jobs a bulk operation's filter matches, newest first, at most `limit`
 * (one more tells the caller there are more).
 */
export function matchingJobIds(sql: SqlStorage, filter: BulkFilter, limit: number): string[] {
  const { where, params } = byStatusAndSession(filter);
  if (filter.created_before !== undefined) {
    // Job objects carry created_at as an ISO 8601 UTC string, which orders as text.
    where.push("json_extract(body, '$.created_at') < ?");
    params.push(filter.created_before);
  }
  for (const tag of filter.tags ?? []) {
    // A bulk operation's one-off match may read the bodies; a job without tags (an older one) has none.
    where.push("EXISTS (SELECT 1 FROM json_each(body, '$.tags') WHERE value = ?)");
    params.push(tag);
  }
  for (const [key, value] of Object.entries(filter.metadata ?? {})) {
    // The job's label rows (kept by triggers), as a list narrowed by metadata reads them.
    where.push("seq IN (SELECT seq FROM labels WHERE label = 'm:' || json_array(?, ?))");
    params.push(key, value);
  }
  const clause = where.length ? `WHERE ${where.join(" AND ")}` : "";
  return sql
    .exec<{ job_id: string }>(`SELECT job_id FROM jobs ${clause} ORDER BY seq DESC LIMIT ?`, ...params, limit + 1)
    .toArray()
    .map((r) => r.job_id);
}

/** The conditions on the columns that both the jobs and their tallies have: status and session. */
function byStatusAndSession(filter: { status?: Status; session_id?: string }): { where: string[]; params: (string | number)[] } {
  const where: string[] = [];
  const params: (string | number)[] = [];
  if (filter.status) {
    where.push("status = ?");
    params.push(filter.status);
  }
  if (filter.session_id !== undefined) {
    where.push("session_id = ?");
    params.push(filter.session_id);
  }
  return { where, params };
}
