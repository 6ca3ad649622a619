import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        // Inside workerd, on miniflare's local SQLite Durable Objects and R2.
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.jsonc" },
            // Alarms are scheduled an hour late so that tests fire them with runDurableObjectAlarm.
            miniflare: { bindings: { ALARM_DELAY_MS: "3600000" } },
          }),
        ],
        test: { name: "workers", include: ["test/*.test.ts"] },
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
