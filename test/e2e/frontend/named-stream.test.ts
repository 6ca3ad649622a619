/**
 * The named-event stream of a run (`/stream?format=named`) read by Chromium's own EventSource,
 * from a page of `wrangler dev` in local development: live to the result, and resumed after its
 * connection is cut.
 */
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { BASE } from "../server";
import { newPage, submitOverApi, withServerAndChromium } from "./page";

withServerAndChromium();

describe("the named-event stream in Chromium's EventSource", () => {
  type Seen = { type: string; id: string; data: Record<string, unknown> };

  /** Opens `/stream?format=named` of the job in the page (`query` added), collecting every event by name until `result`. */
  async function watchNamed(page: Page, id: string, query = ""): Promise<void> {
    await page.evaluate(([job, more]) => {
      const seen: { type: string; id: string; data: unknown }[] = [];
      (window as unknown as { seen: typeof seen }).seen = seen;
      const source = new EventSource(`/api/v1/runs/${job}/stream?format=named${more}`);
      for (const type of ["status", "progress", "log", "output", "input_required", "result"]) {
        source.addEventListener(type, (event) => {
          const message = event as MessageEvent;
          seen.push({ type, id: message.lastEventId, data: JSON.parse(message.data) });
          if (type === "result") source.close();
        });
      }
    }, [id, query]);
  }

  const seenIn = (page: Page) => page.evaluate(() => (window as unknown as { seen: { type: string; id: string; data: Record<string, unknown> }[] }).seen);

  async function submitted(steps: number, stepMs: number): Promise<string> {
    return submitOverApi({ prompt: "named", config: { simulate: { steps, step_ms: stepMs } } });
  }

  /** The stream's events as a full replay gives them (or after `after`), once the job has ended. */
  async function replayed(id: string, after?: number): Promise<{ type: string; data: unknown }[]> {
    const text = await (await fetch(`${BASE}/api/v1/runs/${id}/stream?format=named${after === undefined ? "" : `&after=${after}`}`)).text();
    return text
      .split("\n\n")
      .filter((block) => block.includes("event: "))
      .map((block) => ({ type: /event: (\w+)/.exec(block)![1], data: JSON.parse(/data: (.*)/.exec(block)![1]) }));
  }

  it("reads the contract's events live to the result", async () => {
    const page = await newPage();
    await page.goto(`${BASE}/`, { waitUntil: "load" });
    const id = await submitted(4, 400);
    await watchNamed(page, id);
    await page.waitForFunction(() => (window as unknown as { seen: { type: string }[] }).seen.some((e) => e.type === "result"), null, { timeout: 30_000 });
    const seen: Seen[] = await seenIn(page);
    expect(seen.map((e) => ({ type: e.type, data: e.data }))).toEqual(await replayed(id));
    expect(seen.at(-1)).toMatchObject({ type: "result", data: { status: "succeeded", error: null, result_url: `${BASE}/api/v1/runs/${id}/output` } });
    expect(typeof seen.at(-1)!.data.result).toBe("string");
    expect(seen.filter((e) => e.type === "progress").at(-1)!.data).toMatchObject({ percentage: 100, step: 4 });
    const statuses = seen.filter((e) => e.type === "status").map((e) => e.data.status);
    expect(statuses).toContain("running");
    expect(statuses.at(-1)).toBe("succeeded");
    await page.close();
  });

  it("resumes after a dropped connection with Last-Event-ID: every event once, in order", async () => {
    const id = await submitted(4, 50);
    for (let i = 0; i < 100 && (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()).status !== "succeeded"; i++) await new Promise((r) => setTimeout(r, 100));
    const all = await replayed(id);
    const page = await newPage();
    await page.goto(`${BASE}/`, { waitUntil: "load" });
    // The first connection is cut after a few events, as a dropped network would leave it; the
    // browser's reconnection (with Last-Event-ID) goes to the server untouched.
    let connections = 0;
    await page.route(`**/api/v1/runs/${id}/stream?format=named`, async (route) => {
      connections += 1;
      if (connections > 1) return route.continue();
      const blocks = (await (await route.fetch()).text()).split("\n\n");
      await route.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body: `${blocks.slice(0, 5).join("\n\n")}\n\n` });
    });
    await watchNamed(page, id);
    await page.waitForFunction(() => (window as unknown as { seen: { type: string }[] }).seen.some((e) => e.type === "result"), null, { timeout: 30_000 });
    const seen: Seen[] = await seenIn(page);
    // Had the server not resumed after the last event the browser had, the first ones would come twice.
    expect(connections).toBe(2);
    expect(seen.map((e) => ({ type: e.type, data: e.data }))).toEqual(all);
    await page.close();
  });

  it("opened with ?after= (a page resuming where it left off) and cut: its reconnection resumes after what it had since", async () => {
    const id = await submitted(4, 50);
    for (let i = 0; i < 100 && (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()).status !== "succeeded"; i++) await new Promise((r) => setTimeout(r, 100));
    const rest = await replayed(id, 3);
    const page = await newPage();
    await page.goto(`${BASE}/`, { waitUntil: "load" });
    // The browser reconnects to the same address, ?after=3 and all, with the last id it had as Last-Event-ID.
    let connections = 0;
    await page.route(`**/api/v1/runs/${id}/stream?format=named&after=3`, async (route) => {
      connections += 1;
      if (connections > 1) return route.continue();
      const blocks = (await (await route.fetch()).text()).split("\n\n");
      await route.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body: `${blocks.slice(0, 5).join("\n\n")}\n\n` });
    });
    await watchNamed(page, id, "&after=3");
    await page.waitForFunction(() => (window as unknown as { seen: { type: string }[] }).seen.some((e) => e.type === "result"), null, { timeout: 30_000 });
    const seen: Seen[] = await seenIn(page);
    expect(connections).toBe(2);
    expect(seen.map((e) => ({ type: e.type, data: e.data }))).toEqual(rest);
    await page.close();
  });
});
