/** The job row a RunObject stores, and the job object of the contract derived from it. */
import { jobOutputUrl } from "../ids";
import type { AgentTask } from "../runners/types";
import type { RunnerKind } from "../runners/choice";
import type { Job, Usage } from "../schemas";
import type { OutputPart } from "../storage/blobs";
import { isTerminal, type Status } from "./transitions";

/** What the Worker decides at submit; fixed for the job's life. */
export interface RunSpec {
  job_id: string;
  tenant: string;
  created_at: number;
  prompt: string;
  agent_id: string;
  runner: RunnerKind;
  /** Step names, in order. */
  tasks: string[];
  /** The agent task of each step, for the model runner (empty on the simulated runner). */
  agent: AgentTask[];
  session_id: string | null;
  metadata: Record<string, string>;
  tags: string[];
  config: Record<string, unknown>;
  timeout_s: number;
  /** How long the job is kept after it ends, when the submission chose; else the deployment's. */
  retention_ms: number | null;
  webhook_url: string | null;
  idempotency_key: string | null;
  /**
   * The hash of the body its idempotency key is held with (src/routes/idempotency.ts), kept so that
   * a job whose submit never registered it can claim its key itself (`keyClaim`). None without a
   * key, nor in a spec from before.
   */
  body_hash?: string | null;
  /** Its place in the tenant's line: higher first; at most MAX_RUNNING_PER_KEY per key at once. */
  priority: number;
  concurrency_key: string | null;
  /** Not started before this time (a delay), or null. */
  scheduled_for: number | null;
  /** How long it may wait in line once it may start, or null. */
  queue_ttl_s: number | null;
  /** The submit's request id, carried into the job's log lines. */
  request_id: string | null;
  /** How long a request for input waits for its answer before the job fails. */
  input_timeout_s: number;
  /** The failed or cancelled job this one retries, or null. */
  retry_of: string | null;
  /**
   * The origin (`scheme://host:port`) the job was submitted to, as its `poll_url` names it: its
   * webhook links to its output there. A spec from before has none.
   */
  origin?: string;
  /**
   * The names of the tenant's projection shard and line this job belongs to (src/tenant/shards.ts);
   * a spec from before shards has neither, and belongs to the tenant's own objects.
   */
  projection?: string;
  line?: string;
}

/** An idempotency key a job's snapshot claims, with the hash of the body it was submitted with. */
export interface KeyClaim {
  idempotency_key: string;
  body_hash: string;
}

/**
 * What a job's snapshots carry to claim its idempotency key (TenantProjection.upsert): a submit
 * cut short after making the job, before registering it (its Worker stopped), leaves a job the
 * projection has never heard of. Nothing for a job without a key.
 */
export function keyClaim(spec: RunSpec): { claim?: KeyClaim } {
  return spec.idempotency_key !== null && typeof spec.body_hash === "string" ? { claim: { idempotency_key: spec.idempotency_key, body_hash: spec.body_hash } } : {};
}

/** A step a retry does not run again: its output, copied from the job retried, and the note it had. */
export type CopiedStep = OutputPart & { idx: number; note: string | null };

export interface RunRow {
  status: Status;
  started_at: number | null;
  completed_at: number | null;
  cancelled_at: number | null;
  error: string | null;
  steps_total: number;
  steps_completed: number;
  current_step: string | null;
  version: number;
  deleted_at: number | null;
  deadline_at: number | null;
  expires_at: number | null;
  next_step_at: number | null;
  /** While awaiting input: the request (JSON of StoredInputRequest); else null. */
  input_request: string | null;
  /** Run time left of the job's timeout while it waits for a person (the clock stops), else null. */
  time_left_ms: number | null;
  /** Tokens and model calls of every step so far; `estimated_calls` of them counted from text. */
  prompt_tokens: number;
  completion_tokens: number;
  model_calls: number;
  estimated_calls: number;
}

/** A request for input as the job stores it: the contract's object and the step's index. */
export interface StoredInputRequest {
  step_index: number;
  step: string;
  prompt: string;
  output: string;
  requested_at: number;
  expires_at: number;
}

export const POLL_INTERVAL_S = 2;

/** Delivery of the job's webhook, as shown on the job object. */
export interface WebhookState {
  state: "pending" | "delivered" | "failed" | "stopped";
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
}

/**
 * The tenant objects a job reports to: those its spec (or an outbox row copied from it) names,
 * else, from before shards, the tenant's own.
 */
export function tenantObjects(ref: Pick<RunSpec, "tenant" | "projection" | "line">): { projection: string; line: string } {
  return { projection: ref.projection ?? ref.tenant, line: ref.line ?? ref.tenant };
}

/** What a job asks of the line when it is submitted. */
export interface PlaceRequest {
  job_id: string;
  priority: number;
  concurrency_key: string | null;
  /** Not before this time (ms since the epoch); null: as soon as a slot is free. */
  start_at: number | null;
  /** How long it may wait once it may start, or null. */
  ttl_s: number | null;
}

/** What a job answers when the line tells it that it holds a slot. */
export type StartAnswer = "started" | "running" | "not_waiting" | "missing";

/** The job's place in its tenant's line, as its spec asks. */
export function placeRequest(spec: RunSpec): PlaceRequest {
  return { job_id: spec.job_id, priority: spec.priority, concurrency_key: spec.concurrency_key, start_at: spec.scheduled_for, ttl_s: spec.queue_ttl_s };
}

export function initialRow(spec: RunSpec): RunRow {
  return {
    status: "queued",
    started_at: null,
    completed_at: null,
    cancelled_at: null,
    error: null,
    steps_total: spec.tasks.length,
    steps_completed: 0,
    current_step: null,
    version: 1,
    deleted_at: null,
    deadline_at: null,
    expires_at: null,
    // Nothing is due until the line grants it a slot: a waiting job has no alarm.
    next_step_at: null,
    input_request: null,
    time_left_ms: null,
    prompt_tokens: 0,
    completion_tokens: 0,
    model_calls: 0,
    estimated_calls: 0,
  };
}

/** The contract's `input_request`, or null when the job is not awaiting input. */
export function inputRequest(row: RunRow): Job["input_request"] {
  const stored = storedInputRequest(row);
  if (!stored) return null;
  return { step: stored.step, prompt: stored.prompt, output: stored.output, requested_at: iso(stored.requested_at)!, expires_at: iso(stored.expires_at)! };
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Seconds from start to end, or null until both are known. */
export function durationSeconds(job: Pick<Job, "started_at" | "completed_at">): number | null {
  if (!job.started_at || !job.completed_at) return null;
  return (Date.parse(job.completed_at) - Date.parse(job.started_at)) / 1000;
}

/** Whole percent of the steps done. */
export function stepPercentage(completed: number, total: number): number {
  return total > 0 ? Math.floor((100 * completed) / total) : 0;
}

/** The contract's `usage` of a job. */
export function usageOf(row: RunRow): Usage {
  return {
    prompt_tokens: row.prompt_tokens,
    completion_tokens: row.completion_tokens,
    total_tokens: row.prompt_tokens + row.completion_tokens,
    model_calls: row.model_calls,
    estimated: row.estimated_calls > 0,
  };
}

/** A rejected job's error begins so; the person's words follow (`: <input>`). */
export const rejectedAt = (step: string) => `Rejected at step ${step}`;

export function storedInputRequest(row: RunRow): StoredInputRequest | null {
  return row.input_request === null ? null : (JSON.parse(row.input_request) as StoredInputRequest);
}

export function toJob(spec: RunSpec, row: RunRow, webhook: WebhookState | null = null): Job {
  const terminal = isTerminal(row.status);
  const percentage = row.status === "succeeded" ? 100 : stepPercentage(row.steps_completed, row.steps_total);
  return {
    job_id: spec.job_id,
    status: row.status,
    progress: {
      percentage,
      current_step: row.current_step,
      steps_completed: row.steps_completed,
      steps_total: row.steps_total,
    },
    created_at: iso(spec.created_at)!,
    started_at: iso(row.started_at),
    completed_at: iso(row.completed_at),
    cancelled_at: iso(row.cancelled_at),
    session_id: spec.session_id,
    agent_id: spec.agent_id,
    error: row.error,
    retry_after: terminal ? null : POLL_INTERVAL_S,
    metadata: spec.metadata,
    tags: spec.tags,
    expires_at: iso(row.expires_at),
    priority: spec.priority,
    concurrency_key: spec.concurrency_key,
    scheduled_for: iso(spec.scheduled_for),
    queue_position: null,
    input_request: inputRequest(row),
    usage: usageOf(row),
    retry_of: spec.retry_of,
    webhook: spec.webhook_url
      ? {
          url: spec.webhook_url,
          state: webhook?.state ?? "pending",
          attempts: webhook?.attempts ?? 0,
          last_status: webhook?.last_status ?? null,
          last_error: webhook?.last_error ?? null,
          last_attempt_at: iso(webhook?.last_attempt_at ?? null),
        }
      : null,
  };
}

/** Where the job's output is read (GET .../output), as its webhook gives it; null for a job whose origin was not kept. */
export const outputUrl = (spec: RunSpec): string | null => (spec.origin ? jobOutputUrl(spec.origin, spec.job_id) : null);
