/** What a submit may carry (and a retry change), and what a submit answers. */
import * as z from "zod/mini";
import { described, int, isoTime, lazy, metadataRecord, named, statusSchema, tagsSchema, text, withoutProtoKey } from "./fields";

export const MAX_TIMEOUT_S = 86400;
export const DEFAULT_TIMEOUT_S = 3600;
export const MAX_METADATA_KEYS = 16;
export const MAX_RETENTION_S = 30 * 86400;
/** The longest a job may be delayed, or wait in line before it expires: 30 days. */
export const MAX_QUEUE_WAIT_S = 30 * 86400;
export const DEFAULT_PRIORITY = 5;
export const DEFAULT_INPUT_TIMEOUT_S = 86_400;
export const MAX_INPUT_TIMEOUT_S = 604_800;

const simulateKnobFields = () => ({
  steps: z.optional(int(1, 100)),
  step_ms: z.optional(int(0, 600_000)),
  output_bytes: z.optional(int(0, 1024 * 1024 * 1024)),
  fail_at_step: z.optional(int(1)),
  input_at_step: z.optional(described(int(1), "Ask a person for input after this step (1-based)")),
});

/** The simulated runner's knobs as a submit or a retry gives them: a knob it does not have (a misspelt one) → 422, not a knob ignored. */
export const simulateSchema = lazy(() => named(z.strictObject(simulateKnobFields()), "SimulateConfig", "Knobs of the simulated runner"));

/** The knobs as a job holds them, read as any version stored them. */
export const storedSimulateSchema = lazy(() => z.object(simulateKnobFields()));

/** The model settings of a job's config; a recipe's `recipe_config` may set just these. */
const modelFields = () => ({
  // An empty name would be sent to the model endpoint as it is, and the job fail there.
  model: z.optional(text(256, 1)),
  temperature: z.optional(z.number().check(z.minimum(0), z.maximum(2))),
  max_tokens: z.optional(int(1)),
});

/** A prompt: any text but blank (the document says so with a pattern: at least one character that is not white space). */
const promptText = () => z.string().check(z.refine((p) => p.trim().length > 0, "prompt must not be empty"), z.meta({ pattern: "\\S" }));

const budgetField = () => z.optional(described(int(1), "The job's token budget: a model call that would pass it is aborted and the job fails"));

/** A job's config: the model settings, a budget and the simulated runner's knobs, and any other key kept as given. */
export const runConfigSchema = lazy(() =>
  named(
    withoutProtoKey(
      z.looseObject({
        ...modelFields(),
        max_total_tokens: budgetField(),
        simulate: z.optional(simulateSchema()),
      }),
      "a config key may not be __proto__",
    ),
    "RunConfig",
  ),
);

/** The model settings a scoped token fixes for the jobs it submits: what a browser must not choose. */
export const tokenConfigSchema = lazy(() =>
  named(
    z.strictObject({ ...modelFields(), max_total_tokens: budgetField() }),
    "TokenConfig",
    "With submit: the model settings every job the token submits runs with, over the body's config",
  ),
);
export type TokenConfig = z.infer<ReturnType<typeof tokenConfigSchema>>;

export const metadataSchema = lazy(() => named(metadataRecord(MAX_METADATA_KEYS, `metadata may hold at most ${MAX_METADATA_KEYS} keys`), "Metadata"));

const TIMEOUT_RANGE = "timeout must be between 0 and 86400 seconds";

/**
 * PraisonAI's server reads its optional text fields as Python reads a string, an empty one as none
 * (`body.framework or "praisonai"`, `if job.recipe_name:`), so an empty `framework`, `agent_file`,
 * `agent_yaml`, `recipe_name`, `webhook_url` or `idempotency_key` is accepted here and read as
 * not given. Unknown fields are ignored, as pydantic ignores them.
 */
export const submitBodySchema = lazy(() =>
  named(
    z
      .object({
        prompt: promptText().check(z.meta({ example: "Summarise the latest AI news" })),
        agent_file: z.nullish(text(256)),
        agent_yaml: z.nullish(z.string()),
        framework: z.nullish(z.string().check(z.refine((f) => f === "" || f === "praisonai", "Only the 'praisonai' framework runs on this service"))),
        config: z.nullish(runConfigSchema()),
        timeout: z.nullish(int(0, MAX_TIMEOUT_S, TIMEOUT_RANGE)),
        webhook_url: z.nullish(
          z.union([z.literal(""), z.url({ protocol: /^https?$/ }).check(z.maxLength(2048))], {
            error: "Invalid input: expected a URL, or an empty string for none",
          }),
        ),
        session_id: z.nullish(text(256)),
        idempotency_key: z.nullish(text(256)),
        metadata: z.nullish(metadataSchema()),
        tags: z.nullish(tagsSchema()),
        retention_seconds: z.nullish(described(int(1, MAX_RETENTION_S), "Keep the finished job this long (default: the deployment's, 7 days)")),
        priority: z.nullish(described(int(0, 9), "0-9, default 5: higher starts first; first in, first out within a priority")),
        concurrency_key: z.nullish(described(text(128, 1), "Jobs sharing a key run at most MAX_RUNNING_PER_KEY at once")),
        delay_seconds: z.nullish(described(int(1, MAX_QUEUE_WAIT_S), "Stay queued this long before the job may start")),
        start_after: z.nullish(described(isoTime(MAX_QUEUE_WAIT_S), "Start no earlier than this time (ISO 8601, with its offset; at most 30 days ahead); a past time starts now")),
        queue_ttl_seconds: z.nullish(described(int(1, MAX_QUEUE_WAIT_S), "A job not started this long after it may start ends failed")),
        input_timeout_s: z.nullish(described(int(1, MAX_INPUT_TIMEOUT_S), "A request for input unanswered this long fails the job (default 86400)")),
        recipe_name: z.nullish(described(text(128), "A recipe bundled with the deployment (recipes/<name>.yaml); the prompt is its input")),
        recipe_config: z.nullish(
          described(
            z.strictObject(modelFields()),
            "Overrides the job's config for the recipe: model, temperature, max_tokens",
          ),
        ),
      })
      .check(
        z.refine((body) => !body.recipe_name || (!body.agent_file && !body.agent_yaml), {
          message: "Give recipe_name or an agent (agent_file, agent_yaml), not both",
          path: ["recipe_name"],
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
export type SubmitInput = z.input<ReturnType<typeof submitBodySchema>>;

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
export type SubmitResponse = z.infer<ReturnType<typeof submitResponseSchema>>;
