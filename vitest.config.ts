import { createHash } from "node:crypto";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";
import { WEBHOOK_SECRET } from "./test/hooks/protocol.ts";
import { LLM_KEY, LLM_URL } from "./test/model/protocol.ts";

// Alarms are scheduled an hour late so that tests fire them with runDurableObjectAlarm.
const TEST_BINDINGS = { ALARM_DELAY_MS: "3600000" };
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

export default defineConfig({
  test: {
    projects: [
      {
        // Inside workerd, on miniflare's local SQLite Durable Objects and R2.
        plugins: [cloudflareTest({ wrangler: { configPath: "./wrangler.jsonc" }, miniflare: { bindings: TEST_BINDINGS } })],
        test: { name: "workers", include: ["test/*.test.ts"] },
      },
      {
        // The same, with API keys configured for two tenants.
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.jsonc" },
            miniflare: {
              bindings: {
                ...TEST_BINDINGS,
                API_KEYS: JSON.stringify({ [sha256("key-alpha")]: "alpha", [sha256("key-beta")]: "beta", [sha256("key-gamma")]: "gamma" }),
                CORS_ORIGINS: "https://app.example.com",
              },
              ratelimits: { RATE_LIMITER: { simple: { limit: 50, period: 60 } } },
            },
          }),
        ],
        test: { name: "workers-keys", include: ["test/keys/*.test.ts"] },
      },
      {
        // The same, with the model runner pointed at a local server speaking the OpenAI protocol
        // and webhooks going to a local receiver that checks their signatures.
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.jsonc" },
            miniflare: {
              bindings: {
                ...TEST_BINDINGS,
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
            },
          }),
        ],
        test: {
          name: "workers-peers",
          include: ["test/model/*.test.ts", "test/hooks/*.test.ts"],
          globalSetup: ["test/model/llm-server.ts", "test/hooks/receiver.ts"],
        },
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
