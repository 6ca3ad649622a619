/**
 * What the API answers about jobs (a job, its result, a list, stats) and the queries and path
 * parameters that read them; with the health check's answer and the one error shape.
 */
import * as z from "zod/mini";
import { STATUSES } from "../run/transitions";
import { described, lazy, named, queryBool, statusSchema, text } from "./fields";
import { inputRequestSchema } from "./input";

export const progressSchema = lazy(() =>
  z.object({
    percentage: z.number().check(z.minimum(0), z.maximum(100)),
    current_step: z.nullable(z.string()),
    steps_completed: z.int(),
    steps_total: z.nullable(z.int()),
  }),
);

const webhookStateSchema = lazy(() =>
  z.object({
    url: z.string(),
    state: z.enum(["pending", "delivered", "failed", "stopped"]),
    attempts: z.int(),
    last_status: z.nullable(z.int()),
    last_error: z.nullable(z.string()),
    last_attempt_at: z.nullable(z.string()),
  }),
);

export const usageSchema = lazy(() =>
  named(
    z.object({
      prompt_tokens: z.int(),
      completion_tokens: z.int(),
      total_tokens: z.int(),
      model_calls: z.int(),
      estimated: described(z.boolean(), "Some calls had no usage from the provider and were counted as characters / 4"),
    }),
    "Usage",
  ),
);
export type Usage = z.infer<ReturnType<typeof usageSchema>>;

const dayUsageSchema = lazy(() =>
  z.object({ day: z.string(), prompt_tokens: z.int(), completion_tokens: z.int(), total_tokens: z.int(), model_calls: z.int() }),
);

export type DayUsage = z.infer<ReturnType<typeof dayUsageSchema>>;

export const jobSchema = lazy(() =>
  named(
    z.object({
      job_id: z.string(),
      status: statusSchema(),
      progress: progressSchema(),
      created_at: z.string(),
      started_at: z.nullable(z.string()),
      completed_at: z.nullable(z.string()),
      cancelled_at: z.nullable(z.string()),
      session_id: z.nullable(z.string()),
      agent_id: z.nullable(z.string()),
      error: z.nullable(z.string()),
      retry_after: z.nullable(z.int()),
      metadata: z.record(z.string(), z.string()),
      tags: z.array(z.string()),
      expires_at: z.nullable(z.string()),
      priority: z.int(),
      concurrency_key: z.nullable(z.string()),
      scheduled_for: described(z.nullable(z.string()), "When a delayed job may start; null when not delayed"),
      queue_position: described(z.nullable(z.int()), "While queued: 1-based place among the jobs that could start next; else null"),
      usage: usageSchema(),
      retry_of: described(z.nullable(z.string()), "The failed or cancelled job this one retries; else null"),
      input_request: described(z.nullable(inputRequestSchema()), "While awaiting_input: what the job asks a person; else null"),
      webhook: described(z.nullable(webhookStateSchema()), "Delivery of the job's latest webhook, when the job has a webhook_url"),
    }),
    "Job",
  ),
);
export type Job = z.infer<ReturnType<typeof jobSchema>>;

export const resultSchema = lazy(() =>
  named(
    z.object({
      job_id: z.string(),
      status: statusSchema(),
      result: z.nullable(z.string()),
      result_url: z.string(),
      duration_seconds: z.nullable(z.number()),
      created_at: z.string(),
      started_at: z.nullable(z.string()),
      completed_at: z.nullable(z.string()),
      error: z.null(),
    }),
    "RunResult",
  ),
);

export const listQuerySchema = lazy(() =>
  z.object({
    status: z.optional(described(z.string(), `One of ${STATUSES.join(", ")}`)),
    session_id: z.optional(text(256)),
    tag: z.optional(described(z.union([z.string(), z.array(z.string())]), "Repeatable: jobs carrying every tag given. Also metadata.<key>=<value> (exact, at most 5)")),
    page: z.optional(z.coerce.number().check(z.int(), z.minimum(1), z.maximum(1_000_000))),
    page_size: z.optional(z.coerce.number().check(z.int(), z.minimum(1), z.maximum(100))),
    cursor: z.optional(described(text(64), "Opaque keyset cursor from next_cursor")),
  }),
);

export const listResponseSchema = lazy(() =>
  named(
    z.object({
      jobs: z.array(jobSchema()),
      total: z.int(),
      page: z.int(),
      page_size: z.int(),
      next_cursor: z.nullable(z.string()),
    }),
    "RunList",
  ),
);

export const statsSchema = lazy(() =>
  named(
    z.object({
      total_jobs: z.int(),
      by_status: z.record(statusSchema(), z.int()),
      usage: described(z.omit(dayUsageSchema(), { day: true }), "The tenant's tokens over all its jobs, deleted ones included"),
      usage_by_day: described(z.array(dayUsageSchema()), "The last 31 UTC days, oldest first"),
    }),
    "Stats",
  ),
);

export const healthSchema = lazy(() =>
  named(z.object({ status: z.literal("healthy"), runner: z.string(), version: z.string() }), "Health"),
);

export const errorSchema = lazy(() =>
  named(z.object({ detail: z.union([z.string(), z.array(z.record(z.string(), z.unknown()))]) }), "Error"),
);

/** 409 for an idempotency key that names a job made from another body: that job beside `detail`, as PraisonAI answers. */
export const keyConflictSchema = lazy(() =>
  named(z.object({ detail: z.string(), job_id: z.string(), status: statusSchema(), message: z.string() }), "IdempotencyConflict"),
);

/** 400 for the result of a job that has none: a failed job's `error` beside `detail`. */
export const noResultSchema = lazy(() => named(z.object({ detail: z.string(), error: z.optional(z.nullable(z.string())) }), "NoResult"));

export const jobIdParamSchema = lazy(() =>
  z.object({
    id: z.string().check(z.meta({ example: "run_abc123" })),
  }),
);

/** Where an event stream resumes, in the address: for EventSource, which cannot send headers. */
const afterParam = () =>
  z.optional(described(z.string(), "Resume after this event id, for EventSource, which cannot send headers; a Last-Event-ID it sends on reconnecting wins"));

export const streamQuerySchema = lazy(() =>
  z.object({
    after: afterParam(),
    format: z.optional(described(z.enum(["named"]), "named: `event: <type>` with bare payloads for EventSource, ending with `result`")),
  }),
);

export const feedQuerySchema = lazy(() =>
  z.object({
    status: z.optional(described(z.string(), `One of ${STATUSES.join(", ")}`)),
    session_id: z.optional(text(256)),
    tag: z.optional(described(z.union([z.string(), z.array(z.string())]), "Repeatable: jobs carrying every tag given. Also metadata.<key>=<value> (exact, at most 5)")),
    after: afterParam(),
    token: z.optional(described(z.string(), "A scoped token, for EventSource, which cannot send headers")),
  }),
);

export const deleteQuerySchema = lazy(() =>
  z.object({
    force: z.optional(described(queryBool(), "Cancel a queued or running job first")),
  }),
);

export type RunResult = z.infer<ReturnType<typeof resultSchema>>;
export type RunList = z.infer<ReturnType<typeof listResponseSchema>>;
export type Stats = z.infer<ReturnType<typeof statsSchema>>;
export type ListQuery = z.input<ReturnType<typeof listQuerySchema>>;
export type { Status } from "../run/transitions";
