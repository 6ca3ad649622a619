/**
 * The reference frontend in Chromium against `wrangler dev` in local development, behind a
 * lagging proxy: a source seconds behind (the tenant's feed, the reply to an answer) does not undo
 * what the page has seen since.
 */
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { BASE } from "../server";
import { startProxy } from "../proxy";
import { answerWhenAsked, open, row, submitRun, withServerAndChromium } from "./page";

withServerAndChromium();

/** A page opened through a lagging proxy that hands on the responses of `path` `lagMs` late; `close` closes both. */
async function openBehindLagging(path: string | RegExp, lagMs: number, prepare?: (page: Page) => Promise<void>) {
  const lagging = await startProxy(BASE, { lag: { path, ms: lagMs } });
  const { page, problems } = await open(`${lagging.base}/`, undefined, undefined, prepare);
  const close = async () => {
    await page.close();
    await lagging.close();
  };
  return { page, problems, close };
}

type Told = { event: string; job_id: string; status?: string };

/**
 * Before the page loads: each event of the tenant's feed that the page reads, pushed to
 * `window.feedTold` as the page's own reading gets it (the feed's body, split in two as it comes).
 */
async function heedFeed(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const told: Told[] = ((window as unknown as { feedTold: Told[] }).feedTold = []);
    const fetched = window.fetch.bind(window);
    window.fetch = async (input, init) => {
      const res = await fetched(input, init);
      if (!String(input).startsWith("/api/v1/runs/events") || res.body === null) return res;
      const [read, heeded] = res.body.tee();
      void (async () => {
        const decoder = new TextDecoder();
        let text = "";
        const reader = heeded.getReader();
        for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
          text += decoder.decode(chunk.value, { stream: true });
          const blocks = text.split("\n\n");
          text = blocks.pop()!;
          for (const block of blocks) {
            const event = /^event: (.*)$/m.exec(block)?.[1];
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if ((event === "run" || event === "deleted") && data) told.push({ event, ...JSON.parse(data) });
          }
        }
      })();
      return new Response(read, { status: res.status, statusText: res.statusText, headers: res.headers });
    };
  });
}

/**
 * A page whose tenant feed reaches it `lagMs` late, through a lagging proxy, as over a slow link
 * (the feed comes from the tenant's projection, which hears of a run's changes after the run's own
 * stream tells them), with what the feed told it as the page read it; `caughtUp` waits until the
 * feed has told what `it` matches, and the page has handled it.
 */
async function openBehindLaggingFeed(lagMs = 4000) {
  const { page, problems, close } = await openBehindLagging("/api/v1/runs/events", lagMs, heedFeed);
  const told = () => page.evaluate(() => (window as unknown as { feedTold: Told[] }).feedTold);
  return {
    page,
    problems,
    told,
    caughtUp: async (it: (event: Told) => boolean) => {
      await expect.poll(async () => (await told()).some(it), { timeout: 15_000 }).toBe(true);
      // One more turn of the page's event loop: the event has been handled.
      await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
    },
    close,
  };
}

describe("the reference frontend behind a slow link", () => {
  it("a run that ended stays ended when the tenant's feed, seconds behind its stream, tells of it still running: the step chosen to retry from stands", async () => {
    const { page, problems, told, caughtUp, close } = await openBehindLaggingFeed();
    try {
      // Each status the run's panel shows, in order.
      await page.evaluate(() => {
        const shown: string[] = ((window as unknown as { shown: string[] }).shown = []);
        const pill = document.getElementById("detail-status")!;
        new MutationObserver(() => shown.push(`${document.getElementById("detail-id")!.textContent} ${pill.textContent}`)).observe(pill, { childList: true });
      });
      const id = await submitRun(page, "Ends before the feed says so", { steps: 3, step_ms: 300, fail_at_step: 3 });
      // The panel follows the run's own stream, not waiting for the feed: running, then failed,
      // before the feed has told anything of the run.
      await page.waitForSelector("#detail-status.running", { timeout: 15_000 });
      expect((await told()).filter((event) => event.job_id === id)).toEqual([]);
      await page.waitForSelector("#detail-status.failed", { timeout: 15_000 });
      await expect.poll(() => page.locator("#retry-button").innerText()).toBe("Retry from step 3");
      expect((await told()).filter((event) => event.job_id === id)).toEqual([]);
      await page.selectOption("#retry-from", "2");
      await caughtUp((event) => event.job_id === id && event.status === "failed");
      expect((await told()).some((event) => event.job_id === id && event.status === "running")).toBe(true);
      const shown = (await page.evaluate(() => (window as unknown as { shown: string[] }).shown)).filter((line) => line.startsWith(`${id} `));
      const sinceEnded = shown.slice(shown.indexOf(`${id} failed`));
      expect(sinceEnded).toEqual(sinceEnded.map(() => `${id} failed`));
      expect(await page.locator("#retry-from").inputValue()).toBe("2");
      expect(await page.locator("#retry-button").innerText()).toBe("Retry from step 2");
      expect(await row(page, id).getAttribute("data-status")).toBe("failed");
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });

  it("an input answered from the page is not asked for again when the tenant's feed, seconds behind, tells of the run awaiting it", async () => {
    const { page, problems, told, caughtUp, close } = await openBehindLaggingFeed();
    try {
      const id = await submitRun(page, "Asks while the feed lags", { steps: 3, step_ms: 8000, input_at_step: 1 });
      await page.waitForSelector("#input-panel:not([hidden])", { timeout: 30_000 });
      // How often the panel is shown from here on.
      await page.evaluate(() => {
        const seen = window as unknown as { panelShown: number };
        seen.panelShown = 0;
        const panel = document.getElementById("input-panel")!;
        new MutationObserver(() => (seen.panelShown += panel.hidden ? 0 : 1)).observe(panel, { attributes: true, attributeFilter: ["hidden"] });
      });
      await answerWhenAsked(page, "approve", "Fine as it is");
      await page.waitForSelector("#input-panel", { state: "hidden" });
      // The page answered before the feed told of the run awaiting input: that news is now old.
      expect((await told()).some((event) => event.job_id === id && event.status === "awaiting_input")).toBe(false);
      await caughtUp((event) => event.job_id === id && event.status === "awaiting_input");
      expect(await page.locator("#input-panel").isHidden()).toBe(true);
      expect(await page.evaluate(() => (window as unknown as { panelShown: number }).panelShown)).toBe(0);
      expect(await page.locator("#detail-status").getAttribute("class")).toBe("status running");
      expect(await row(page, id).getAttribute("data-status")).toBe("running");
      expect(problems).toEqual([]);
      expect((await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    } finally {
      await close();
    }
  });

  it("an answer whose reply comes after the run's stream told it running shows it running, not queued as the reply says", async () => {
    // Answered, a run is queued and at once running again; the reply (queued) reaches the page 3 s late.
    const { page, problems, close } = await openBehindLagging(/^\/api\/v1\/runs\/[^/]+\/input$/, 3000);
    try {
      const id = await submitRun(page, "Answered over a slow link", { steps: 3, step_ms: 8000, input_at_step: 1 });
      await page.waitForSelector("#input-panel:not([hidden])", { timeout: 30_000 });
      const reply = page.waitForResponse((res) => res.url().endsWith(`/api/v1/runs/${id}/input`) && res.request().method() === "POST");
      await page.locator("#input-text").fill("Fine as it is");
      await page.locator('[data-answer="approve"]').click();
      // The stream tells the run running before the reply comes.
      await page.waitForSelector("#detail-status.running", { timeout: 10_000 });
      expect(((await (await reply).json()) as { status: string }).status).toBe("queued");
      // The page clears the answer's text as it shows the reply: the reply has been handled.
      await expect.poll(() => page.locator("#input-text").inputValue()).toBe("");
      expect(await page.locator("#detail-status").getAttribute("class")).toBe("status running");
      expect(await page.locator("#input-panel").isHidden()).toBe(true);
      expect(problems).toEqual([]);
      expect((await fetch(`${BASE}/api/v1/runs/${id}/cancel`, { method: "POST" })).status).toBe(200);
    } finally {
      await close();
    }
  });

  it("a run deleted from the page does not come back when the tenant's feed, seconds behind, tells of it after", async () => {
    const { page, problems, told, caughtUp, close } = await openBehindLaggingFeed();
    try {
      // The runs the list shows, each time it changes.
      await page.evaluate(() => {
        const lists: string[][] = ((window as unknown as { lists: string[][] }).lists = []);
        const list = document.getElementById("run-list")!;
        new MutationObserver(() => lists.push(Array.from(list.children, (item) => (item as HTMLElement).dataset.id!))).observe(list, { childList: true });
      });
      const id = await submitRun(page, "Deleted before the feed says so", { steps: 1, step_ms: 1 });
      await page.waitForSelector("#detail-status.succeeded", { timeout: 15_000 });
      await page.click("#delete-button");
      await page.waitForSelector("#detail-empty:not([hidden])");
      expect((await told()).filter((event) => event.job_id === id)).toEqual([]);
      expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
      const since = await page.evaluate(() => (window as unknown as { lists: string[][] }).lists.length);
      await caughtUp((event) => event.job_id === id && event.event === "deleted");
      expect((await told()).some((event) => event.job_id === id && event.status === "succeeded")).toBe(true);
      const lists = await page.evaluate(() => (window as unknown as { lists: string[][] }).lists);
      expect(lists.slice(since).filter((ids) => ids.includes(id))).toEqual([]);
      expect(await row(page, id).count()).toBe(0);
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });
});
