/**
 * The contract's shapes as zod schemas: the single source for request validation,
 * TypeScript types and the OpenAPI document.
 */
import { z } from "@hono/zod-openapi";
import { STATUSES } from "./run/transitions";

export const MAX_TIMEOUT_S = 86400;
export const DEFAULT_TIMEOUT_S = 3600;
const MAX_METADATA_KEYS = 16;
export const MAX_RETENTION_S = 30 * 86400;
/** The longest a job may be delayed, or wait in line before it expires: 30 days. */
export const MAX_QUEUE_WAIT_S = 30 * 86400;
export const DEFAULT_PRIORITY = 5;

export const StatusSchema = z.enum(STATUSES).openapi("Status");

export const SimulateSchema = z
  .object({
    steps: z.number().int().min(1).max(100).optional(),
    step_ms: z.number().int().min(0).max(600_000).optional(),
    output_bytes: z.number().int().min(0).max(1024 * 1024 * 1024).optional(),
    fail_at_step: z.number().int().min(1).optional(),
  })
  .openapi("SimulateConfig", { description: "Knobs of the simulated runner" });

export const RunConfigSchema = z
  .looseObject({
    model: z.string().max(256).optional(),
    temperature: z.number().min(0).max(2).optional(),
    max_tokens: z.number().int().min(1).optional(),
    simulate: SimulateSchema.optional(),
  })
  .openapi("RunConfig");

export const MetadataSchema = z
  .record(z.string().min(1).max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= MAX_METADATA_KEYS, {
    message: `metadata may hold at most ${MAX_METADATA_KEYS} keys`,
  })
  .openapi("Metadata");

export const SubmitBodySchema = z
  .object({
    prompt: z
      .string()
      .refine((p) => p.trim().length > 0, { message: "prompt must not be empty" })
      .openapi({ example: "Summarise the latest AI news" }),
    agent_file: z.string().max(256).nullish(),
    agent_yaml: z.string().nullish(),
    framework: z
      .string()
      .nullish()
      .refine((f) => f == null || f === "praisonai", {
        message: "Only the 'praisonai' framework runs on this service",
      }),
    config: RunConfigSchema.nullish(),
    timeout: z
      .number()
      .int()
      .min(0, { message: "timeout must be between 0 and 86400 seconds" })
      .max(MAX_TIMEOUT_S, { message: "timeout must be between 0 and 86400 seconds" })
      .nullish(),
    webhook_url: z.url({ protocol: /^https?$/ }).max(2048).nullish(),
    session_id: z.string().max(256).nullish(),
    idempotency_key: z.string().min(1).max(256).nullish(),
    metadata: MetadataSchema.nullish(),
    retention_seconds: z
      .number()
      .int()
      .min(1)
      .max(MAX_RETENTION_S)
      .nullish()
      .openapi({ description: "Keep the finished job this long (default: the deployment's, 7 days)" }),
    priority: z
      .number()
      .int()
      .min(0)
      .max(9)
      .nullish()
      .openapi({ description: "0-9, default 5: higher starts first; first in, first out within a priority" }),
    concurrency_key: z
      .string()
      .min(1)
      .max(128)
      .nullish()
      .openapi({ description: "Jobs sharing a key run at most MAX_RUNNING_PER_KEY at once" }),
    delay_seconds: z
      .number()
      .int()
      .min(1)
      .max(MAX_QUEUE_WAIT_S)
      .nullish()
      .openapi({ description: "Stay queued this long before the job may start" }),
    start_after: z.iso
      .datetime({ offset: true })
      .nullish()
      .openapi({ description: "Start no earlier than this time (ISO 8601); a past time starts now" }),
    queue_ttl_seconds: z
      .number()
      .int()
      .min(1)
      .max(MAX_QUEUE_WAIT_S)
      .nullish()
      .openapi({ description: "A job not started this long after it may start ends failed" }),
    recipe_name: z
      .unknown()
      .refine(() => false, { message: "recipe_name is not supported: recipes would change what runs" })
      .optional()
      .openapi({ description: "Not supported: any value is refused with 422" }),
  })
  .refine((body) => body.delay_seconds == null || body.start_after == null, {
    message: "Give delay_seconds or start_after, not both",
    path: ["start_after"],
  })
  .openapi("SubmitRun");
export type SubmitBody = z.infer<typeof SubmitBodySchema>;

export const ProgressSchema = z.object({
  percentage: z.number().min(0).max(100),
  current_step: z.string().nullable(),
  steps_completed: z.number().int(),
  steps_total: z.number().int().nullable(),
});

export const JobSchema = z
  .object({
    job_id: z.string(),
    status: StatusSchema,
    progress: ProgressSchema,
    created_at: z.string(),
    started_at: z.string().nullable(),
    completed_at: z.string().nullable(),
    cancelled_at: z.string().nullable(),
    session_id: z.string().nullable(),
    agent_id: z.string().nullable(),
    error: z.string().nullable(),
    retry_after: z.number().int().nullable(),
    metadata: z.record(z.string(), z.string()),
    expires_at: z.string().nullable(),
    priority: z.number().int(),
    concurrency_key: z.string().nullable(),
    scheduled_for: z.string().nullable().openapi({ description: "When a delayed job may start; null when not delayed" }),
    queue_position: z
      .number()
      .int()
      .nullable()
      .openapi({ description: "While queued: 1-based place among the jobs that could start next; else null" }),
    webhook: z
      .object({
        url: z.string(),
        state: z.enum(["pending", "delivered", "failed", "stopped"]),
        attempts: z.number().int(),
        last_status: z.number().int().nullable(),
        last_error: z.string().nullable(),
        last_attempt_at: z.string().nullable(),
      })
      .nullable()
      .openapi({ description: "Delivery of the terminal-state webhook, when the job has a webhook_url" }),
  })
  .openapi("Job");
export type Job = z.infer<typeof JobSchema>;

export const SubmitResponseSchema = z
  .object({
    job_id: z.string(),
    status: StatusSchema,
    created_at: z.string(),
    poll_url: z.string(),
    stream_url: z.string(),
  })
  .openapi("SubmitResponse");

export const ResultSchema = z
  .object({
    job_id: z.string(),
    status: StatusSchema,
    result: z.string().nullable(),
    result_url: z.string(),
    duration_seconds: z.number().nullable(),
    created_at: z.string(),
    started_at: z.string().nullable(),
    completed_at: z.string().nullable(),
    error: z.null(),
  })
  .openapi("RunResult");

export const ListQuerySchema = z.object({
  status: z.string().optional().openapi({ description: `One of ${STATUSES.join(", ")}` }),
  session_id: z.string().max(256).optional(),
  page: z.coerce.number().int().min(1).max(1_000_000).optional(),
  page_size: z.coerce.number().int().min(1).max(100).optional(),
  cursor: z.string().max(64).optional().openapi({ description: "Opaque keyset cursor from next_cursor" }),
});

export const ListResponseSchema = z
  .object({
    jobs: z.array(JobSchema),
    total: z.number().int(),
    page: z.number().int(),
    page_size: z.number().int(),
    next_cursor: z.string().nullable(),
  })
  .openapi("RunList");

export const StatsSchema = z
  .object({
    total_jobs: z.number().int(),
    by_status: z.record(StatusSchema, z.number().int()),
  })
  .openapi("Stats");

export const HealthSchema = z.object({ status: z.literal("healthy"), runner: z.string() }).openapi("Health");

export const ErrorSchema = z
  .object({ detail: z.union([z.string(), z.array(z.record(z.string(), z.unknown()))]) })
  .openapi("Error");

export const JobIdParamSchema = z.object({
  id: z.string().openapi({ param: { name: "id", in: "path" }, example: "run_abc123" }),
});

export const StreamQuerySchema = z.object({
  after: z.string().optional().openapi({ description: "Resume after this event id (like Last-Event-ID)" }),
});

export const DeleteQuerySchema = z.object({
  force: z.enum(["true", "false"]).optional().openapi({ description: "Cancel a queued or running job first" }),
});

export type SubmitInput = z.input<typeof SubmitBodySchema>;
export type SubmitResponse = z.infer<typeof SubmitResponseSchema>;
export type RunResult = z.infer<typeof ResultSchema>;
export type RunList = z.infer<typeof ListResponseSchema>;
export type Stats = z.infer<typeof StatsSchema>;
export type ListQuery = z.input<typeof ListQuerySchema>;
export type { Status } from "./run/transitions";
