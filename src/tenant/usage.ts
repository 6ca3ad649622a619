/**
 * A tenant's token usage, as its projection counts it: each new snapshot of a job adds what the
 * job used since the one before, to the UTC day it arrives (`usage_days`, projectionSchema.ts).
 */
import type { DayUsage, Job, Stats, Usage } from "../schemas";

/** How many UTC days `usage_by_day` covers, today included. */
const USAGE_DAYS = 31;
const DAY_MS = 86_400_000;

export type Counted = Pick<Usage, "prompt_tokens" | "completion_tokens" | "model_calls">;
export const NO_USAGE: Counted = { prompt_tokens: 0, completion_tokens: 0, model_calls: 0 };
/** A snapshot's usage; one from a version before usage was counted has none. */
export const counted = (job: Pick<Job, "usage"> | null): Counted => job?.usage ?? NO_USAGE;

/**
 * A held snapshot's usage, read in SQL from its body so that the body need not be parsed (none,
 * for a snapshot from before usage was counted), and the columns of a row that read it.
 */
export const SNAPSHOT_USAGE = `COALESCE(json_extract(body, '$.usage.prompt_tokens'), 0) AS prompt_tokens,
  COALESCE(json_extract(body, '$.usage.completion_tokens'), 0) AS completion_tokens,
  COALESCE(json_extract(body, '$.usage.model_calls'), 0) AS model_calls`;
export const usageColumns = ({ prompt_tokens, completion_tokens, model_calls }: Counted): Counted => ({ prompt_tokens, completion_tokens, model_calls });

const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** Counts what a job used between two of its snapshots into today's usage (inside the caller's transaction). */
export function addUsage(sql: SqlStorage, before: Counted, after: Counted): void {
  const prompt = after.prompt_tokens - before.prompt_tokens;
  const completion = after.completion_tokens - before.completion_tokens;
  const calls = after.model_calls - before.model_calls;
  if (prompt === 0 && completion === 0 && calls === 0) return;
  sql.exec(
    `INSERT INTO usage_days (day, prompt_tokens, completion_tokens, model_calls) VALUES (?, ?, ?, ?)
     ON CONFLICT (day) DO UPDATE SET prompt_tokens = prompt_tokens + excluded.prompt_tokens,
       completion_tokens = completion_tokens + excluded.completion_tokens, model_calls = model_calls + excluded.model_calls`,
    utcDay(Date.now()),
    prompt,
    completion,
    calls,
  );
}

/** The tenant's usage: in all, and by day over the last USAGE_DAYS UTC days, oldest first, days without any at zero. */
export function usageStats(sql: SqlStorage): Pick<Stats, "usage" | "usage_by_day"> {
  const totals = sql
    .exec<Counted>(
      `SELECT COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, COALESCE(SUM(completion_tokens), 0) AS completion_tokens,
         COALESCE(SUM(model_calls), 0) AS model_calls FROM usage_days`,
    )
    .one();
  const today = Date.now();
  const first = utcDay(today - (USAGE_DAYS - 1) * DAY_MS);
  const byDay = new Map(
    sql.exec<Counted & { day: string }>("SELECT day, prompt_tokens, completion_tokens, model_calls FROM usage_days WHERE day >= ?", first).toArray().map((r) => [r.day, r]),
  );
  const usage_by_day: DayUsage[] = [];
  for (let i = USAGE_DAYS - 1; i >= 0; i--) {
    const day = utcDay(today - i * DAY_MS);
    usage_by_day.push({ day, ...withTotal(byDay.get(day) ?? NO_USAGE) });
  }
  return { usage: withTotal(totals), usage_by_day };
}

const withTotal = ({ prompt_tokens, completion_tokens, model_calls }: Counted) => ({
  prompt_tokens,
  completion_tokens,
  total_tokens: prompt_tokens + completion_tokens,
  model_calls,
});
