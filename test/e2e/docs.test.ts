/** The API reference page in a real headless Chromium (Debian's package), against `wrangler dev`. */
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "./browser";
import { BASE, startServer, stopServer, type DevServer } from "./server";

let server: DevServer;
let browser: Browser;
beforeAll(async () => {
  server = await startServer();
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
    expect(operations.length).toBe(17);

    // "Try it out" (on from the start) on GET /health, answered by this server.
    await page.locator("#operations-default-get_health .opblock-summary").click();
    await page.locator("#operations-default-get_health .execute").click();
    await page.waitForSelector("#operations-default-get_health .response .highlight-code", { timeout: 10_000 });
    expect(await page.locator("#operations-default-get_health .live-responses-table").innerText()).toContain('"runner": "simulated"');
    await page.screenshot({ path: `${server.persistTo}/docs.png`, fullPage: false });
    expect(problems).toEqual([]);
  });
});
