/**
 * The contract's shapes as zod schemas: the single source for request validation, TypeScript
 * types and the OpenAPI document. zod's tree-shakable form ("mini") keeps the Worker small; a
 * schema with an `id` is a named component of the OpenAPI document. Each schema is built on its
 * first use (`jobSchema()`): building them all as the module loads cost every cold isolate
 * about 15 ms, mostly for response shapes that only the OpenAPI document reads.
 */
import * as z from "zod/mini";
import { STATUSES } from "./run/transitions";

/** What a scoped token may do (src/tokens.ts). */
export const SCOPES = ["read", "stream", "submit", "cancel", "input", "delete"] as const;
export type Scope = (typeof SCOPES)[number];

export const MAX_TIMEOUT_S = 86400;
export const DEFAULT_TIMEOUT_S = 3600;
const MAX_METADATA_KEYS = 16;
export const MAX_RETENTION_S = 30 * 86400;
/** The longest a job may be delayed, or wait in line before it expires: 30 days. */
export const MAX_QUEUE_WAIT_S = 30 * 86400;
export const DEFAULT_PRIORITY = 5;
export const DEFAULT_INPUT_TIMEOUT_S = 86_400;
export const MAX_INPUT_TIMEOUT_S = 604_800;
/** The most text a person's answer to a request for input may hold. */
export const MAX_INPUT_BYTES = 64 * 1024;

const int = (min: number, max?: number, message?: string) =>
  max === undefined ? z.int().check(z.minimum(min, message)) : z.int().check(z.minimum(min, message), z.maximum(max, message));
const text = (max: number, min = 0) => (min > 0 ? z.string().check(z.minLength(min), z.maxLength(max)) : z.string().check(z.maxLength(max)));
/** A field the OpenAPI document explains. */
const described = <T extends z.ZodMiniType>(schema: T, description: string): T => schema.check(z.describe(description));
/** A schema built on its first use, then kept. */
function lazy<T>(build: () => T): () => T {
  let built: T | undefined;
  return () => (built ??= build());
}
/** A named component of the OpenAPI document. */
const named = <T extends z.ZodMiniType>(schema: T, id: string, description?: string): T => schema.check(z.meta({ id, description }));

export const statusSchema = lazy(() =>
  named(z.enum(STATUSES), "Status"),
);

export const simulateSchema = lazy(() =>
  named(
    z.object({
      steps: z.optional(int(1, 100)),
      step_ms: z.optional(int(0, 600_000)),
      output_bytes: z.optional(int(0, 1024 * 1024 * 1024)),
      fail_at_step: z.optional(int(1)),
      input_at_step: z.optional(described(int(1), "Ask a person for input after this step (1-based)")),
    }),
    "SimulateConfig",
    "Knobs of the simulated runner",
  ),
);

/** The model settings of a job's config; a recipe's `recipe_config` may set just these. */
const modelFields = () => ({
  model: z.optional(text(256)),
  temperature: z.optional(z.number().check(z.minimum(0), z.maximum(2))),
  max_tokens: z.optional(int(1)),
});

/** A prompt: any text but blank. */
const promptText = () => z.string().check(z.refine((p) => p.trim().length > 0, "prompt must not be empty"));

export const runConfigSchema = lazy(() =>
  named(
    z.looseObject({
      ...modelFields(),
      max_total_tokens: z.optional(described(int(1), "The job's token budget: a model call that would pass it is aborted and the job fails")),
      simulate: z.optional(simulateSchema()),
    }),
    "RunConfig",
  ),
);

/** A job's tags: at most 10, each 1 to 64 of `A-Za-z0-9_.:-`. */
export const MAX_TAGS = 10;
export const TAG = /^[A-Za-z0-9_.:-]{1,64}$/;
const tagText = () => z.string().check(z.regex(TAG, "a tag is 1 to 64 of A-Za-z0-9_.:-"));
export const tagsSchema = lazy(() =>
  named(
    z.array(tagText()).check(z.maxLength(MAX_TAGS, `at most ${MAX_TAGS} tags`)),
    "Tags",
  ),
);

export const metadataSchema = lazy(() =>
  named(
    z.record(text(64, 1), text(512)).check(
      z.refine((m) => Object.keys(m).length <= MAX_METADATA_KEYS, `metadata may hold at most ${MAX_METADATA_KEYS} keys`),
    ),
    "Metadata",
  ),
);

const TIMEOUT_RANGE = "timeout must be between 0 and 86400 seconds";

export const submitBodySchema = lazy(() =>
  named(
    z
      .object({
        prompt: promptText().check(z.meta({ example: "Summarise the latest AI news" })),
        agent_file: z.nullish(text(256)),
        agent_yaml: z.nullish(z.string()),
        framework: z.nullish(z.string().check(z.refine((f) => f === "praisonai", "Only the 'praisonai' framework runs on this service"))),
        config: z.nullish(runConfigSchema()),
        timeout: z.nullish(int(0, MAX_TIMEOUT_S, TIMEOUT_RANGE)),
        webhook_url: z.nullish(z.url({ protocol: /^https?$/ }).check(z.maxLength(2048))),
        session_id: z.nullish(text(256)),
        idempotency_key: z.nullish(text(256, 1)),
        metadata: z.nullish(metadataSchema()),
        tags: z.nullish(tagsSchema()),
        retention_seconds: z.nullish(described(int(1, MAX_RETENTION_S), "Keep the finished job this long (default: the deployment's, 7 days)")),
        priority: z.nullish(described(int(0, 9), "0-9, default 5: higher starts first; first in, first out within a priority")),
        concurrency_key: z.nullish(described(text(128, 1), "Jobs sharing a key run at most MAX_RUNNING_PER_KEY at once")),
        delay_seconds: z.nullish(described(int(1, MAX_QUEUE_WAIT_S), "Stay queued this long before the job may start")),
        start_after: z.nullish(described(z.iso.datetime({ offset: true }), "Start no earlier than this time (ISO 8601); a past time starts now")),
        queue_ttl_seconds: z.nullish(described(int(1, MAX_QUEUE_WAIT_S), "A job not started this long after it may start ends failed")),
        input_timeout_s: z.nullish(described(int(1, MAX_INPUT_TIMEOUT_S), "A request for input unanswered this long fails the job (default 86400)")),
        recipe_name: z.nullish(described(text(128, 1), "A recipe bundled with the deployment (recipes/<name>.yaml); the prompt is its input")),
        recipe_config: z.nullish(
          described(
            z.strictObject(modelFields()),
            "Overrides the job's config for the recipe: model, temperature, max_tokens",
          ),
        ),
      })
      .check(
        z.refine((body) => body.recipe_name == null || (body.agent_file == null && body.agent_yaml == null), {
          message: "Give recipe_name or an agent (agent_file, agent_yaml), not both",
          path: ["recipe_name"],
        }),
        z.refine((body) => body.recipe_config == null || body.recipe_name != null, {
          message: "recipe_config needs recipe_name",
          path: ["recipe_config"],
        }),
        z.refine((body) => body.delay_seconds == null || body.start_after == null, {
          message: "Give delay_seconds or start_after, not both",
          path: ["start_after"],
        }),
      ),
    "SubmitRun",
  ),
);
export type SubmitBody = z.infer<ReturnType<typeof submitBodySchema>>;

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

export const retryBodySchema = lazy(() =>
  named(
    z.object({
      from_step: z.nullish(described(int(1), "Run again from this step (1-based); at most the first unfinished step, which is the default")),
      prompt: z.nullish(promptText()),
      // Its keys replace the retried job's config keys.
      config: z.nullish(runConfigSchema()),
    }),
    "RetryRun",
  ),
);
export type RetryInput = z.input<ReturnType<typeof retryBodySchema>>;

/** The most job ids one bulk request may name, and the most jobs its filter may match. */
export const MAX_BULK_IDS = 1000;
export const MAX_BULK_MATCHES = 100_000;

export const bulkBodySchema = lazy(() =>
  named(
    z
      .strictObject({
        status: z.optional(statusSchema()),
        session_id: z.optional(text(256)),
        created_before: z.optional(described(z.iso.datetime({ offset: true }), "Jobs created before this time (ISO 8601)")),
        // Jobs carrying every one of these tags.
        tags: z.optional(tagsSchema()),
        job_ids: z.optional(z.array(text(140, 1)).check(z.minLength(1), z.maxLength(MAX_BULK_IDS))),
        force: z.optional(described(z.boolean(), "delete: cancel queued, running and awaiting jobs first (else they are skipped)")),
      })
      .check(
        z.refine((b) => (b.job_ids === undefined) !== (b.status === undefined && b.session_id === undefined && b.created_before === undefined && b.tags === undefined), {
          message: "Give job_ids, or a filter (status, session_id, tags, created_before), not both and not neither",
        }),
      ),
    "BulkRequest",
  ),
);
export type BulkBody = z.infer<ReturnType<typeof bulkBodySchema>>;

export const bulkAcceptedSchema = lazy(() => named(z.object({ bulk_id: z.string(), matched: z.int() }), "BulkAccepted"));

export const bulkProgressSchema = lazy(() =>
  named(
    z.object({
      bulk_id: z.string(),
      action: z.enum(["cancel", "delete"]),
      matched: z.int(),
      done: z.int(),
      skipped: described(z.int(), "Jobs the action did not apply to (already finished, not finished without force, or gone)"),
      failed: z.int(),
      state: z.enum(["running", "done"]),
    }),
    "BulkProgress",
  ),
);

/** What a scoped token may reach and do (src/tokens.ts). */
export const MAX_TOKEN_RUNS = 100;
export const tokenBodySchema = lazy(() =>
  named(
    z
      .strictObject({
        scopes: described(
          z.array(z.enum(SCOPES)).check(z.minLength(1), z.maxLength(SCOPES.length * 2)),
          "read (status, result, output, list), stream (stream, feed), submit, cancel, input, delete",
        ),
        runs: z.optional(described(z.array(z.string().check(z.regex(/^run_[A-Za-z0-9_-]{1,128}$/, "a job id"))).check(z.minLength(1), z.maxLength(MAX_TOKEN_RUNS)), "The jobs the token reaches")),
        session_id: z.optional(described(text(256, 1), "The token reaches this session's jobs; the jobs it submits join it")),
        tags: z.optional(described(z.array(tagText()).check(z.minLength(1), z.maxLength(MAX_TAGS, `at most ${MAX_TAGS} tags`)), "The token reaches jobs carrying all these tags; the jobs it submits carry them")),
        ttl_seconds: z.optional(described(int(60, 86_400), "Lifetime, 60 to 86400 seconds (default 900)")),
        max_submits: z.optional(described(int(1, 1000), "With submit: how many jobs the token may submit (default 1)")),
      })
      .check(
        z.refine((b) => b.max_submits === undefined || b.scopes.includes("submit"), { message: "max_submits needs the submit scope", path: ["max_submits"] }),
        z.refine((b) => b.runs !== undefined || b.session_id !== undefined || b.tags !== undefined || b.scopes.every((s) => s === "submit"), {
          message: "A token needs a reach (runs, session_id or tags) unless its only scope is submit",
        }),
      ),
    "TokenRequest",
  ),
);
export type TokenInput = z.input<ReturnType<typeof tokenBodySchema>>;

export const tokenSchema = lazy(() =>
  named(
    z.object({
      token: described(z.string(), "Send as Authorization: Bearer <token>, or ?token= on the stream and feed"),
      expires_at: z.string(),
      scopes: z.array(z.enum(SCOPES)),
      runs: z.nullable(z.array(z.string())),
      session_id: z.nullable(z.string()),
      tags: z.nullable(z.array(z.string())),
      max_submits: z.nullable(z.int()),
    }),
    "Token",
  ),
);

export const bulkIdParamSchema = lazy(() => z.object({ bulk_id: z.string() }));

export const inputRequestSchema = lazy(() =>
  named(
    z.object({
      step: z.string(),
      prompt: z.string(),
      output: described(z.string(), "The step's answer, at most 16 KiB"),
      requested_at: z.string(),
      expires_at: z.string(),
    }),
    "InputRequest",
  ),
);

const inputText = () =>
  z.string().check(z.refine((t) => new TextEncoder().encode(t).length <= MAX_INPUT_BYTES, `input must be at most ${MAX_INPUT_BYTES} bytes`));

export const inputBodySchema = lazy(() =>
  named(
    z
      .object({
        action: z.enum(["approve", "revise", "reject"]),
        input: z.optional(described(inputText(), "approve: a note for the next tasks; revise: the feedback; reject: the reason")),
      })
      .check(
        z.refine((body) => body.action !== "revise" || (body.input ?? "").trim().length > 0, {
          message: "revise needs input: the feedback for the step",
          path: ["input"],
        }),
      ),
    "RunInput",
  ),
);
export type InputBody = z.infer<ReturnType<typeof inputBodySchema>>;

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

export const submitResponseSchema = lazy(() =>
  named(
    z.object({
      job_id: z.string(),
      status: statusSchema(),
      created_at: z.string(),
      poll_url: z.string(),
      stream_url: z.string(),
    }),
    "SubmitResponse",
  ),
);

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

export const jobIdParamSchema = lazy(() =>
  z.object({
    id: z.string().check(z.meta({ example: "run_abc123" })),
  }),
);

export const streamQuerySchema = lazy(() =>
  z.object({
    after: z.optional(described(z.string(), "Resume after this event id (like Last-Event-ID)")),
    format: z.optional(described(z.enum(["named"]), "named: `event: <type>` with bare payloads for EventSource, ending with `result`")),
  }),
);

export const feedQuerySchema = lazy(() =>
  z.object({
    status: z.optional(described(z.string(), `One of ${STATUSES.join(", ")}`)),
    session_id: z.optional(text(256)),
    tag: z.optional(described(z.union([z.string(), z.array(z.string())]), "Repeatable: jobs carrying every tag given. Also metadata.<key>=<value> (exact, at most 5)")),
    token: z.optional(described(z.string(), "A scoped token, for EventSource, which cannot send headers")),
  }),
);

export const deleteQuerySchema = lazy(() =>
  z.object({
    force: z.optional(described(z.enum(["true", "false"]), "Cancel a queued or running job first")),
  }),
);

export type SubmitInput = z.input<ReturnType<typeof submitBodySchema>>;
export type SubmitResponse = z.infer<ReturnType<typeof submitResponseSchema>>;
export type RunResult = z.infer<ReturnType<typeof resultSchema>>;
export type RunList = z.infer<ReturnType<typeof listResponseSchema>>;
export type Stats = z.infer<ReturnType<typeof statsSchema>>;
export type ListQuery = z.input<ReturnType<typeof listQuerySchema>>;
export type TokenResponse = z.infer<ReturnType<typeof tokenSchema>>;
export type { Status } from "./run/transitions";
