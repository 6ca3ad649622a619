import { createHash } from "node:crypto";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";
import { WEBHOOK_SECRET } from "./test/hooks/protocol.ts";
import { TOKEN_SECRET } from "./test/tokens/protocol.ts";
import { LLM_KEY, LLM_URL } from "./test/model/protocol.ts";
import { poolFixed } from "./scripts/patch-test-pool.mjs";

// Without its fix, the pinned test pool slows with every request and object a test file makes, and
// the model-based tests overflow its stack (scripts/patch-test-pool.mjs says how).
if (!poolFixed()) throw new Error("The test pool lacks its fix: run `node scripts/patch-test-pool.mjs` (npm runs it after every install)");

/** The Durable Object bindings of the Worker, with their classes. */
const OBJECTS = [
  ["RUNS", "RunObject"],
  ["PROJECTIONS", "TenantProjection"],
  ["LINES", "TenantLine"],
  ["BULKS", "BulkObject"],
] as const;

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * A project of tests inside workerd, on miniflare's local SQLite Durable Objects and R2, with
 * the Worker's bindings plus `bindings`. Alarms are scheduled an hour late in every one, so that
 * tests fire them with runDurableObjectAlarm.
 */
function workers(
  name: string,
  include: string[],
  bindings: Record<string, string> = {},
  extra: { ratelimits?: object; globalSetup?: string[]; testTimeout?: number } = {},
) {
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.jsonc" },
        miniflare: { bindings: { ALARM_DELAY_MS: "3600000", ...bindings }, ...(extra.ratelimits ? { ratelimits: extra.ratelimits } : {}) },
      }),
    ],
    test: { name, include, ...(extra.globalSetup ? { globalSetup: extra.globalSetup } : {}), ...(extra.testTimeout ? { testTimeout: extra.testTimeout } : {}) },
  };
}

export default defineConfig({
  test: {
    // The service's JSON log lines (test/operations.test.ts reads them) would bury the report.
    onConsoleLog: (log) => !log.startsWith('{"event":'),
    projects: [
      // A tenant limit high enough that jobs the tests leave running never hold up another.
      // A short feed log, so that a watcher can fall behind it.
      workers("workers", ["test/*.test.ts"], { MAX_RUNNING_PER_TENANT: "1000", FEED_KEEP_CHANGES: "20" }),
      // The tenant's line under small limits: 3 running, 1 per concurrency key, 8 queued.
      workers("workers-line", ["test/line/*.test.ts"], { MAX_RUNNING_PER_TENANT: "3", MAX_RUNNING_PER_KEY: "1", MAX_QUEUED_PER_TENANT: "8" }),
      // A tenant's projection in 3 shards and its line in 2 lines, each running 2 of its 4 slots.
      // Its tests submit and drive dozens of jobs each: more than the default 5 s on a busy machine.
      workers(
        "workers-shards",
        ["test/shards/*.test.ts"],
        { PROJECTION_SHARDS: "3", LINE_SHARDS: "2", MAX_RUNNING_PER_TENANT: "4", MAX_RUNNING_PER_KEY: "1" },
        { testTimeout: 60_000 },
      ),
      // Earlier versions' state loaded into today's objects, under the limit those versions ran with.
      workers("workers-upgrade", ["test/upgrade/*.test.ts"], { MAX_RUNNING_PER_TENANT: "2" }),
      // With API keys for three tenants, configured CORS origins and a small rate limit.
      workers(
        "workers-keys",
        ["test/keys/*.test.ts"],
        {
          API_KEYS: JSON.stringify({ [sha256("key-alpha")]: "alpha", [sha256("key-beta")]: "beta", [sha256("key-gamma")]: "gamma", [sha256("key-delta")]: "delta" }),
          CORS_ORIGINS: "https://app.example.com",
          TOKEN_SECRET,
          // As in the first project: jobs the tests leave running hold no one up.
          MAX_RUNNING_PER_TENANT: "1000",
        },
        { ratelimits: { RATE_LIMITER: { simple: { limit: 50, period: 60 } }, TOKEN_RATE_LIMITER: { simple: { limit: 20, period: 60 } } } },
      ),
      // Scoped tokens, and the API document checked against the answers: API keys for two tenants
      // and a secret to sign tokens with.
      workers(
        "workers-tokens",
        ["test/tokens/*.test.ts", "test/document/*.test.ts"],
        {
          API_KEYS: JSON.stringify({ [sha256("key-alpha")]: "alpha", [sha256("key-beta")]: "beta" }),
          TOKEN_SECRET,
          CORS_ORIGINS: "https://app.example.com",
          // As in the first project: jobs the tests leave running hold no one up.
          MAX_RUNNING_PER_TENANT: "1000",
        },
        // Its tests go through every route for every scope and reach: many requests each.
        { ratelimits: { RATE_LIMITER: { simple: { limit: 100000, period: 60 } }, TOKEN_RATE_LIMITER: { simple: { limit: 100000, period: 60 } } }, testTimeout: 60_000 },
      ),
      // With the model runner pointed at a local server speaking the OpenAI protocol, and
      // webhooks going to a local receiver that checks their signatures.
      workers(
        "workers-peers",
        ["test/model/*.test.ts", "test/hooks/*.test.ts"],
        {
          MODEL_BASE_URL: `${LLM_URL}/v1`,
          MODEL_NAME: "echo",
          MODEL_API_KEY: LLM_KEY,
          MODEL_IDLE_TIMEOUT_MS: "1000",
          RETRY_BASE_MS: "50",
          ALLOW_SIMULATE: "true",
          WEBHOOK_SECRET,
          WEBHOOK_ALLOW_PRIVATE: "true",
          WEBHOOK_RETRY_BASE_MS: "50",
          WEBHOOK_RETRY_WINDOW_MS: "1500",
          STALL_TIMEOUT_MS: "1500",
        },
        { globalSetup: ["test/model/llm-server.ts", "test/hooks/receiver.ts"] },
      ),
      // One version of skew, both ways: today's Worker against the previous version's objects (an
      // auxiliary Worker runs that version's bundle, test/skew/previous.worker.js, with objects of its
      // own), and that version's Worker (imported by the tests) against today's objects.
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.jsonc" },
            miniflare: {
              bindings: { ALARM_DELAY_MS: "3600000", MAX_RUNNING_PER_TENANT: "1000" },
              durableObjects: {
                ...Object.fromEntries(OBJECTS.map(([binding, className]) => [binding, { className, useSQLite: true }])),
                ...Object.fromEntries(OBJECTS.map(([binding, className]) => [`PREVIOUS_${binding}`, { className, scriptName: "previous", useSQLite: true }])),
              },
              workers: [
                {
                  name: "previous",
                  modules: true,
                  scriptPath: "test/skew/previous.worker.js",
                  compatibilityDate: "2026-04-20",
                  durableObjects: Object.fromEntries(OBJECTS.map(([binding, className]) => [binding, { className, useSQLite: true }])),
                  r2Buckets: { OUTPUTS: "edge-runs-outputs" },
                  // Its alarms fire by themselves: the tests cannot reach another Worker's objects to fire them.
                  bindings: { MAX_RUNNING_PER_TENANT: "1000" },
                },
              ],
            },
          }),
        ],
        test: { name: "workers-skew", include: ["test/skew/*.test.ts"] },
      },
      {
        // Black-box: a real `wrangler dev` on 127.0.0.1:8005, driven over HTTP from Node.
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
