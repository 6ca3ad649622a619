/**
 * The API reference page in a real headless Chromium (Debian's package), against `wrangler dev`
 * in a deployment's shape: with an API key, as a deployment's reference is tried out.
 */
import { createHash } from "node:crypto";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "./browser";
import { BASE, startServer, stopServer, type DevServer } from "./server";

const KEY = "docs-test-key";

let server: DevServer;
let browser: Browser;
beforeAll(async () => {
  const keys = JSON.stringify({ [createHash("sha256").update(KEY).digest("hex")]: "docs" });
  server = await startServer(undefined, ["--var", `API_KEYS:${keys}`]);
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  if (server) await stopServer(server);
});

describe("GET /docs", () => {
  it("renders every operation of /openapi.json with no console errors, and tries one out", async () => {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`page: ${error.message}`));
    page.on("requestfailed", (request) => problems.push(`request: ${request.url()} ${request.failure()?.errorText}`));

    await page.goto(`${BASE}/docs`, { waitUntil: "networkidle" });
    await page.waitForSelector(".opblock", { timeout: 30_000 });
    const operations = await page.locator(".opblock-summary-path").allInnerTexts();
    expect(operations.map((o) => o.replace(/\u200b/g, "").trim())).toEqual(
      expect.arrayContaining(["/api/v1/runs", "/api/v1/runs/{id}", "/api/v1/runs/{id}/cancel", "/api/v1/runs/{id}/stream", "/health", "/stats"]),
    );
    // Every operation the document describes, one block each.
    const document = (await (await fetch(`${BASE}/openapi.json`)).json()) as { paths: Record<string, object> };
    expect(operations.length).toBe(Object.values(document.paths).reduce((n, methods) => n + Object.keys(methods).length, 0));
    expect(operations.length).toBe(18);

    // "Try it out" (on from the start) on GET /health, answered by this server.
    await page.locator("#operations-default-get_health .opblock-summary").click();
    await page.locator("#operations-default-get_health .execute").click();
    await page.waitForSelector("#operations-default-get_health .response .highlight-code", { timeout: 10_000 });
    expect(await page.locator("#operations-default-get_health .live-responses-table").innerText()).toContain('"runner": "simulated"');
    await page.screenshot({ path: `${server.persistTo}/docs.png`, fullPage: false });
    expect(problems).toEqual([]);
  });

  it("sends the key given to Authorize with every operation tried out", async () => {
    const page = await browser.newPage();
    await page.goto(`${BASE}/docs`, { waitUntil: "networkidle" });
    await page.waitForSelector(".opblock", { timeout: 30_000 });
    const stats = page.locator("#operations-default-get_stats");
    await stats.locator(".opblock-summary").click();
    const tryOut = async () => {
      await stats.locator(".execute").click();
      await stats.locator(".live-responses-table .response-col_status").first().waitFor({ timeout: 10_000 });
      return stats.locator(".live-responses-table").innerText();
    };
    expect(await tryOut()).toContain('"detail": "Unauthorized"');

    await page.locator(".auth-wrapper .authorize").click();
    const bearer = page.locator(".auth-container").filter({ hasText: "(http, Bearer)" });
    await page.locator("#auth-bearer-value").fill(KEY);
    await bearer.locator("button.authorize").click();
    await bearer.locator("button.btn-done").click();
    await stats.locator(".btn-clear").click();
    const answer = await tryOut();
    expect(answer).toContain('"total_jobs": 0');
    expect(answer).not.toContain("Unauthorized");

    // The document says so: every operation but /health takes either scheme, and may answer 401.
    const document = (await (await fetch(`${BASE}/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { security: object[]; responses: Record<string, unknown> }>>;
    };
    for (const [path, methods] of Object.entries(document.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const keyed = path !== "/health";
        expect(op.security, `${method} ${path}`).toEqual(keyed ? [{ bearer: [] }, { apiKey: [] }] : []);
        expect(Object.keys(op.responses).includes("401"), `${method} ${path}`).toBe(keyed);
      }
    }
  });
});
