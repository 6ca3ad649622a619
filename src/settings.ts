/**
 * Is this deployment's configuration sound? One set of checks, with no dependencies, serves both
 * `npm run deploy:check` (in Node, before a deploy, offline) and the Worker, which answers a
 * request it cannot serve soundly with 503 naming the setting (never 500, never half-configured).
 * Settings are read by name from the Worker's env, or from a deployment's vars and secrets.
 */

/** The whole-number settings: their defaults, least values and (for some) greatest values. */
const NUMBERS = {
  // At most what a job's object stores of a submit in its one row (MAX_SPEC_BYTES, src/run/store.ts).
  MAX_BODY_BYTES: [1024 * 1024, 0, 2 * 1024 * 1024],
  // An inline result is held whole in the isolate's memory (128 MB, shared by its requests),
  // several times over while /result encodes it.
  INLINE_RESULT_BYTES: [1024 * 1024, 0, 8 * 1024 * 1024],
  RETENTION_SECONDS: [7 * 86400, 0],
  MAX_STEP_ATTEMPTS: [3, 1],
  ALARM_DELAY_MS: [0, 0],
  RETRY_BASE_MS: [1000, 0],
  MAX_RUNNING_PER_TENANT: [10, 1],
  MAX_RUNNING_PER_KEY: [2, 1],
  MAX_QUEUED_PER_TENANT: [100_000, 1],
  WEBHOOK_RETRY_BASE_MS: [10_000, 1],
  WEBHOOK_RETRY_WINDOW_MS: [86_400_000, 0],
  STALL_TIMEOUT_MS: [900_000, 1],
  MODEL_IDLE_TIMEOUT_MS: [60_000, 1],
  RATE_LIMIT_PER_MINUTE: [600, 1],
  TOKEN_RATE_LIMIT_PER_MINUTE: [300, 1],
  FEED_KEEP_CHANGES: [10_000, 1],
  // A tenant's projection shards and lines (docs/SCALE.md): raised, never lowered, once it has jobs.
  PROJECTION_SHARDS: [1, 1, 16],
  LINE_SHARDS: [1, 1, 16],
  // The count PROJECTION_SHARDS had before it was last raised (0: never): idempotency keys and
  // token submit counters from before the raise are looked for in their shard under it too.
  PROJECTION_SHARDS_BEFORE: [0, 0, 15],
} as const satisfies Record<string, readonly [number, number] | readonly [number, number, number]>;
export type NumberSetting = keyof typeof NUMBERS;

export const MIN_TOKEN_SECRET_CHARS = 32;
const MIN_WEBHOOK_KEY_BYTES = 24;

/** A setting's text, trimmed; "" when unset. */
function read(settings: object, name: string): string {
  const value = (settings as Record<string, unknown>)[name];
  return typeof value === "string" ? value.trim() : "";
}

/** The setting's value, or its default when unset or empty (or malformed: `settingsProblems` names that). */
export function numberSetting(settings: object, name: NumberSetting): number {
  const [fallback, least, most = Number.MAX_SAFE_INTEGER] = NUMBERS[name] as readonly number[];
  const raw = read(settings, name);
  const n = Number(raw);
  return raw !== "" && Number.isSafeInteger(n) && n >= least && n <= most ? n : fallback;
}

/** The true-or-false settings. */
const FLAGS = ["ALLOW_SIMULATE", "WEBHOOK_ALLOW_PRIVATE"] as const;

/** A true-or-false setting: true only when it is "true"; a value other than "true" or "false" is malformed (`settingsProblems` names it). */
export function flagSetting(settings: object, name: (typeof FLAGS)[number]): boolean {
  return read(settings, name) === "true";
}

/** The entries of CORS_ORIGINS (comma-separated): origins, or "*". */
export function corsOrigins(settings: object): string[] {
  return read(settings, "CORS_ORIGINS").split(",").map((o) => o.trim()).filter(Boolean);
}

/**
 * Is `entry` an origin as a browser sends it in `Origin` (`scheme://host[:port]`: no path, no
 * trailing slash, the host in lower case, no default port), the only form CORS_ORIGINS can match?
 */
function isOrigin(entry: string): boolean {
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^/?#\s]+$/.test(entry)) return false;
  return !/^https?:/.test(entry) || (URL.canParse(entry) && new URL(entry).origin === entry);
}

export interface KeyEntry {
  hash: Uint8Array;
  tenant: string;
}

const TENANT = /^[A-Za-z0-9_-]{1,64}$/;
/** An HTTP header's name: a token of RFC 9110. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const KEYS_SHAPE = "API_KEYS must be a JSON object mapping 64-hex-digit SHA-256 hashes to tenant names of [A-Za-z0-9_-]";

/** The keys of an API_KEYS setting, or what is wrong with it. */
export function parseKeys(source: string): { entries: KeyEntry[] } | { problem: string } {
  if (source.trim() === "") return { entries: [] };
  let map: unknown;
  try {
    map = JSON.parse(source);
  } catch {
    return { problem: `${KEYS_SHAPE}; it is not JSON` };
  }
  if (map === null || typeof map !== "object" || Array.isArray(map)) return { problem: KEYS_SHAPE };
  const entries: KeyEntry[] = [];
  for (const [hash, tenant] of Object.entries(map)) {
    if (!/^[0-9a-f]{64}$/.test(hash) || typeof tenant !== "string" || !TENANT.test(tenant)) return { problem: KEYS_SHAPE };
    entries.push({ hash: Uint8Array.from(hash.match(/../g)!.map((h) => parseInt(h, 16))), tenant });
  }
  return { entries };
}

function webhookSecretProblem(name: string, secret: string): string | null {
  let bytes = 0;
  try {
    bytes = atob(secret.replace(/^whsec_/, "")).length;
  } catch {
    return `${name} must be whsec_ followed by base64; it is not base64`;
  }
  return bytes >= MIN_WEBHOOK_KEY_BYTES ? null : `${name} must hold at least ${MIN_WEBHOOK_KEY_BYTES} bytes of key (base64 after whsec_); it holds ${bytes}`;
}

/** What is wrong with a secret and the one it replaces while it is rotated (`<name>_PREVIOUS`). */
function rotatedSecretProblems(settings: object, name: string, problem: (name: string, secret: string) => string | null): string[] {
  const problems: string[] = [];
  const previousName = `${name}_PREVIOUS`;
  const [secret, previous] = [read(settings, name), read(settings, previousName)];
  for (const [which, value] of [[name, secret], [previousName, previous]]) {
    const found = value === "" ? null : problem(which, value);
    if (found) problems.push(found);
  }
  if (previous !== "" && secret === "") problems.push(`${previousName} is set without ${name}: the new secret goes in ${name}, the old one in ${previousName}`);
  return problems;
}

const tokenSecretProblem = (name: string, secret: string) =>
  secret.length < MIN_TOKEN_SECRET_CHARS ? `${name} must be at least ${MIN_TOKEN_SECRET_CHARS} characters; it has ${secret.length}` : null;

/** What is wrong with the settings, each naming its setting; empty when sound. */
export function settingsProblems(settings: object): string[] {
  const problems: string[] = [];
  const keys = parseKeys(read(settings, "API_KEYS"));
  if ("problem" in keys) problems.push(keys.problem);
  problems.push(...rotatedSecretProblems(settings, "TOKEN_SECRET", tokenSecretProblem));
  problems.push(...rotatedSecretProblems(settings, "WEBHOOK_SECRET", webhookSecretProblem));
  for (const name of Object.keys(NUMBERS) as NumberSetting[]) {
    const raw = read(settings, name);
    if (raw !== "" && numberSetting(settings, name) !== Number(raw)) problems.push(`${name} must be a whole number within its range; it is "${raw}"`);
  }
  const shards = numberSetting(settings, "PROJECTION_SHARDS");
  const before = numberSetting(settings, "PROJECTION_SHARDS_BEFORE");
  if (before >= shards) problems.push(`PROJECTION_SHARDS_BEFORE must be less than PROJECTION_SHARDS (${shards}); it is ${before}`);
  for (const name of FLAGS) {
    const raw = read(settings, name);
    if (raw !== "" && raw !== "true" && raw !== "false") problems.push(`${name} must be true or false; it is "${raw}"`);
  }
  const notOrigin = corsOrigins(settings).find((o) => o !== "*" && !isOrigin(o));
  if (notOrigin !== undefined) problems.push(`CORS_ORIGINS must list origins as browsers send them (scheme://host[:port], no path) or *; "${notOrigin}" is not one`);
  const modelUrl = read(settings, "MODEL_BASE_URL");
  if (modelUrl !== "" && !(URL.canParse(modelUrl) && /^https?:$/.test(new URL(modelUrl).protocol))) problems.push(`MODEL_BASE_URL must be an http(s) URL; it is "${modelUrl}"`);
  const keyHeader = read(settings, "MODEL_API_KEY_HEADER");
  if (keyHeader !== "" && !HEADER_NAME.test(keyHeader)) problems.push(`MODEL_API_KEY_HEADER must be a header name, such as api-key; it is "${keyHeader}"`);
  return problems;
}

/**
 * What a deployment needs besides sound settings: keys (without them it serves nothing but
 * localhost) and, since it accepts webhook_url, a secret to sign webhooks with.
 */
export function deploymentProblems(settings: object): string[] {
  const problems = settingsProblems(settings);
  if (read(settings, "API_KEYS") === "") problems.push("API_KEYS is not set: a deployment without keys refuses every request (npm run mint-key makes one)");
  if (read(settings, "WEBHOOK_SECRET") === "") problems.push("WEBHOOK_SECRET is not set: a deployment's webhooks must be signed");
  return problems;
}

/** A deployment (keys configured) that would send an unsigned webhook; null when it may send. */
export function webhookSigningProblem(settings: object): string | null {
  return read(settings, "API_KEYS") !== "" && read(settings, "WEBHOOK_SECRET") === ""
    ? "WEBHOOK_SECRET is not set: this deployment cannot sign webhooks, so it accepts no webhook_url"
    : null;
}
