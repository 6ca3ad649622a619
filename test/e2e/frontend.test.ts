/**
 * The reference frontend at `/` in a real headless Chromium (Debian's package), against
 * `wrangler dev`: in local development (no keys), and in a deployment's shape (API keys and
 * TOKEN_SECRET) with a scoped token. Screenshots are kept in test-results/frontend/.
 */
import { createHash } from "node:crypto";
import { mkdirSync } from "node:fs";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../src/tokens";
import { launchChromium } from "./browser";
import { startLaggingProxy } from "./lagging-proxy";
import { BASE, startServer, stopServer, type DevServer } from "./server";

const SHOTS = "test-results/frontend";
const KEYED_PORT = 8007;
const KEYED = `http://127.0.0.1:${KEYED_PORT}`;
const KEY = "frontend-test-key";
const TOKEN_SECRET = "frontend-test-token-secret-0123456789abcdef";

let local: DevServer;
let keyed: DevServer;
let browser: Browser;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const keys = JSON.stringify({ [createHash("sha256").update(KEY).digest("hex")]: "web" });
  [local, keyed] = await Promise.all([
    startServer(),
    startServer(undefined, ["--var", `API_KEYS:${keys}`, "--var", `TOKEN_SECRET:${TOKEN_SECRET}`, "--inspector-port", "9231"], KEYED_PORT),
  ]);
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  if (keyed) await stopServer(keyed);
  if (local) await stopServer(local);
});

/** A page with every console error, page error and failed request collected, once `ready` shows (by default, the feed is live). */
async function open(url: string, viewport = { width: 1400, height: 900 }, ready = "#feed-state.live"): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport });
  const problems: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page: ${error.message}`));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector(ready, { timeout: 15_000 });
  return { page, problems };
}

/**
 * Types a tag into the filter and leaves the field, as a user does: the browser sends one change
 * event. (One dispatched by hand leaves the edit uncommitted, and the next click elsewhere sends a
 * second: the page lists again, and a later page loaded meanwhile may be dropped.)
 */
async function filterByTag(page: Page, tag: string): Promise<void> {
  const field = page.locator("#filter-form input[name=tag]");
  await field.fill(tag);
  await field.blur();
}

/** Fills the form and submits a simulated run; answers its id once the page shows it. */
async function submitRun(page: Page, prompt: string, knobs: Record<string, number>, tags = ""): Promise<string> {
  await page.fill("#prompt", prompt);
  await page.fill("input[name=tags]", tags);
  await page.locator("summary", { hasText: "Simulated runner" }).click();
  for (const knob of ["steps", "step_ms", "fail_at_step", "input_at_step"]) await page.fill(`input[name=${knob}]`, knobs[knob] === undefined ? "" : String(knobs[knob]));
  await page.locator("summary", { hasText: "Simulated runner" }).click();
  const before = await page.locator("#detail-id").innerText();
  await page.click("#submit-form button[type=submit]");
  await page.waitForFunction((old) => {
    const id = document.getElementById("detail-id")?.textContent ?? "";
    return id.startsWith("run_") && id !== old;
  }, before);
  return page.locator("#detail-id").innerText();
}

const row = (page: Page, id: string) => page.locator(`#run-list li[data-id="${id}"]`);

/** Waits until the page says how many runs its token may start: it reads that again after each it starts. */
async function submitsLeftSaid(page: Page, text: string): Promise<void> {
  await page.waitForFunction((said) => document.getElementById("submits-left")?.textContent === said, text);
}

/** Answers the run the page shows from its input panel, once the run asks. */
async function answerWhenAsked(page: Page, action: "approve" | "revise" | "reject", text: string): Promise<void> {
  await page.waitForSelector("#input-panel:not([hidden])", { timeout: 15_000 });
  await page.fill("#input-text", text);
  await page.click(`[data-answer=${action}]`);
}

/** Submits a run over the API, as another client of the tenant would; answers its id. */
async function submitOverApi(body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${BASE}/api/v1/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return ((await res.json()) as { job_id: string }).job_id;
}

/** A page opened through a lagging proxy that hands on the responses of `path` `lagMs` late; `close` closes both. */
async function openBehindLagging(path: string | RegExp, lagMs: number) {
  const lagging = await startLaggingProxy(BASE, path, lagMs);
  const { page, problems } = await open(`${lagging.base}/`);
  const close = async () => {
    await page.close();
    await lagging.close();
  };
  return { page, problems, close };
}

/**
 * A page whose tenant feed reaches it `lagMs` late, through a lagging proxy, as over a slow link
 * (the feed comes from the tenant's projection, which hears of a run's changes after the run's own
 * stream tells them), with what the feed told it as Chromium received it; `caughtUp` waits until
 * the feed has told what `it` matches, and the page has handled it.
 */
async function openBehindLaggingFeed(lagMs = 4000) {
  const { page, problems, close } = await openBehindLagging("/api/v1/runs/events", lagMs);
  const cdp = await page.context().newCDPSession(page);
  const told: { event: string; job_id: string; status?: string }[] = [];
  cdp.on("Network.eventSourceMessageReceived", ({ eventName, data }) => {
    if (eventName === "run" || eventName === "deleted") told.push({ event: eventName, ...JSON.parse(data) });
  });
  await cdp.send("Network.enable");
  return {
    page,
    problems,
    told,
    caughtUp: async (it: (event: (typeof told)[number]) => boolean) => {
      await expect.poll(() => told.some(it), { timeout: 15_000 }).toBe(true);
      // One more turn of the page's event loop: the event has been handled.
      await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
    },
    close,
  };
}

describe("the reference frontend in local development", () => {
  it("submit, watch progress live to the end, read the output, delete", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "Write about the edge", { steps: 3, step_ms: 400 }, "demo, docs");
    // The run appears in the list from the feed, with its tags, and runs.
    await row(page, id).waitFor();
    expect(await row(page, id).locator(".tag").allInnerTexts()).toEqual(["demo", "docs"]);
    await page.waitForSelector("#detail-status.running");
    expect(await page.locator("#delete-button").isDisabled()).toBe(true);
    expect(await page.locator("#delete-rule").innerText()).toBe("A running job must be cancelled first.");
    await page.screenshot({ path: `${SHOTS}/running.png` });
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    await page.waitForFunction(() => (document.getElementById("detail-output")?.textContent ?? "").includes("Step 3/3"));
    const output = await page.locator("#detail-output").innerText();
    expect(output).toContain("simulated answer to: Write about the edge");
    const log = await page.locator("#detail-log li").allInnerTexts();
    expect(log.some((line) => /PROGRESS\s*100%/i.test(line))).toBe(true);
    await expect.poll(() => row(page, id).getAttribute("data-status")).toBe("succeeded");
    // What the page shows is what the API says.
    const job = await (await fetch(`${BASE}/api/v1/runs/${id}`)).json();
    expect(job.tags).toEqual(["demo", "docs"]);
    expect(await page.locator("#detail-usage").innerText()).toBe(`${job.usage.total_tokens} tokens in 3 model calls (estimated)`);
    // Only a failed or cancelled run can be retried.
    expect(await page.locator("#retry-button").isHidden()).toBe(true);
    await page.screenshot({ path: `${SHOTS}/succeeded.png` });

    await page.click("#delete-button");
    await row(page, id).waitFor({ state: "detached" });
    expect(await page.locator("#detail-body").isHidden()).toBe(true);
    expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("submit, cancel, delete", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "A long one", { steps: 20, step_ms: 1000 });
    await page.waitForSelector("#detail-status.running");
    await page.click("#cancel-button");
    await page.waitForSelector("#detail-status.cancelled");
    await expect.poll(() => row(page, id).getAttribute("data-status")).toBe("cancelled");
    expect(await page.locator("#delete-rule").isHidden()).toBe(true);
    await page.screenshot({ path: `${SHOTS}/cancelled.png` });
    await page.click("#delete-button");
    await row(page, id).waitFor({ state: "detached" });
    expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a submit answered 503 while a deploy is under way, then with its answer lost, makes one run: it is sent again with the same idempotency key", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const tag = `once-${Date.now()}`;
    /** The idempotency key of each submit the page sent, and what became of it: a deploy's 503, an answer lost on its way back, then through. */
    const sent: string[] = [];
    await page.route("**/api/v1/runs", async (route) => {
      if (route.request().method() !== "POST") return route.continue();
      sent.push(route.request().headers()["idempotency-key"]);
      if (sent.length === 1) {
        return route.fulfill({ status: 503, headers: { "Retry-After": "1", "Content-Type": "application/json" }, body: JSON.stringify({ detail: "Service is being updated; retry shortly" }) });
      }
      if (sent.length === 2) {
        await route.fetch();
        return route.abort("connectionreset");
      }
      return route.continue();
    });
    await page.fill("#prompt", "Made once");
    await page.fill("input[name=tags]", tag);
    await page.click("#submit-form button[type=submit]");
    // Sent again after the 503's Retry-After, the run was made, and its answer never came: the page says so.
    await page.waitForSelector("#notice:not([hidden])");
    expect(sent).toHaveLength(2);
    const made = await (await fetch(`${BASE}/api/v1/runs?tag=${tag}`)).json();
    expect(made.total).toBe(1);
    // Submitted again, as a user does, it is the same request: the API answers it with that run, which the page opens.
    await page.click("#submit-form button[type=submit]");
    await page.waitForFunction(() => (document.getElementById("detail-id")?.textContent ?? "").startsWith("run_"));
    expect(await page.locator("#detail-id").innerText()).toBe(made.jobs[0].job_id);
    expect(sent).toHaveLength(3);
    expect(new Set(sent).size).toBe(1);
    expect(sent[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect((await (await fetch(`${BASE}/api/v1/runs?tag=${tag}`)).json()).total).toBe(1);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    // The next submit, once a run came of the last, is a new one.
    await page.unroute("**/api/v1/runs");
    await page.click("#submit-form button[type=submit]");
    await expect.poll(async () => (await (await fetch(`${BASE}/api/v1/runs?tag=${tag}`)).json()).total).toBe(2);
    expect(problems.filter((p) => !/503|ERR_CONNECTION_RESET/.test(p))).toEqual([]);
    await page.close();
  });

  it("the agent field names a recipe as a job names it (recipe:<name>), and an unknown one is refused in the API's words", async () => {
    const { page, problems } = await open(`${BASE}/`);
    await page.fill("input[name=agent_file]", "recipe:summarize");
    const id = await submitRun(page, "A long text to sum up", { steps: 1, step_ms: 1 });
    expect((await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()).agent_id).toBe("recipe:summarize");
    await page.fill("input[name=agent_file]", "recipe:nope");
    await page.click("#submit-form button[type=submit]");
    await expect.poll(() => page.locator("#notice").innerText()).toBe("Recipe not found: nope");
    // An agent file, by its name or as a job names it.
    await page.fill("input[name=agent_file]", "file:agents.yaml");
    const filed = await submitRun(page, "From the agents file", { steps: 1, step_ms: 1 });
    expect((await (await fetch(`${BASE}/api/v1/runs/${filed}`)).json()).agent_id).toBe("file:agents.yaml");
    await page.fill("input[name=agent_file]", "");
    expect(problems.filter((p) => !/status of 400/.test(p))).toEqual([]);
    await page.close();
  });

  it("a job that fails shows its error", async () => {
    const { page, problems } = await open(`${BASE}/`);
    await submitRun(page, "This breaks", { steps: 3, step_ms: 100, fail_at_step: 2 });
    await page.waitForSelector("#detail-status.failed", { timeout: 15_000 });
    await page.waitForSelector("#detail-error:not([hidden])");
    expect(await page.locator("#detail-error").innerText()).toMatch(/step 2/i);
    // Step 1 finished: a retry would start at step 2.
    expect(await page.locator("#retry-button").innerText()).toBe("Retry from step 2");
    await page.screenshot({ path: `${SHOTS}/failed.png` });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a cancelled run is retried from its first unfinished step, and the retry names it", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const first = await submitRun(page, "Stopped half way", { steps: 4, step_ms: 600 });
    // Cancelled once two steps have finished.
    await page.waitForFunction(() => (document.getElementById("detail-output")?.textContent ?? "").includes("Step 2/4"), undefined, { timeout: 15_000 });
    await page.click("#cancel-button");
    await page.waitForSelector("#detail-status.cancelled");
    const stopped = await (await fetch(`${BASE}/api/v1/runs/${first}`)).json();
    const from = stopped.progress.steps_completed + 1;
    await expect.poll(() => page.locator("#retry-button").innerText()).toBe(`Retry from step ${from}`);
    await page.click("#retry-button");
    await page.waitForFunction((old) => (document.getElementById("detail-id")?.textContent ?? "") !== old, first);
    const second = await page.locator("#detail-id").innerText();
    expect(await page.locator("#retry-of-link").innerText()).toBe(first);
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    await row(page, second).waitFor();
    // The finished steps were copied, not run again; the output is whole.
    const log = await page.locator("#detail-log li").allInnerTexts();
    expect(log.some((line) => line.includes(`Retry of ${first}: the output of steps 1 to ${from - 1} was copied, not run again`))).toBe(true);
    expect(log.filter((line) => /^PROGRESS/i.test(line)).some((line) => line.includes("step_1"))).toBe(false);
    const output = await (await fetch(`${BASE}/api/v1/runs/${second}/output`)).text();
    for (let step = 1; step <= 4; step++) expect(output).toContain(`Step ${step}/4 (step_${step}): simulated answer to: Stopped half way`);
    expect((await page.locator("#detail-output").innerText()).trimEnd()).toBe(output.trimEnd());
    expect((await (await fetch(`${BASE}/api/v1/runs/${second}`)).json()).retry_of).toBe(first);
    await page.screenshot({ path: `${SHOTS}/retried.png` });
    // The retry's link leads back to the run it retried.
    await page.click("#retry-of-link");
    await page.waitForFunction((id) => document.getElementById("detail-id")?.textContent === id, first);
    await page.waitForSelector("#detail-status.cancelled");
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a failed run is retried from an earlier step chosen in the page: that step runs again, the ones before it are copied", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const first = await submitRun(page, "Fails at the third", { steps: 3, step_ms: 1, fail_at_step: 3 });
    await page.waitForSelector("#detail-status.failed", { timeout: 15_000 });
    await expect.poll(() => page.locator("#retry-button").innerText()).toBe("Retry from step 3");
    expect(await page.locator("#retry-from option").allInnerTexts()).toEqual(["from step 1", "from step 2", "from step 3"]);
    await page.selectOption("#retry-from", "2");
    expect(await page.locator("#retry-button").innerText()).toBe("Retry from step 2");
    await page.click("#retry-button");
    await page.waitForFunction((old) => (document.getElementById("detail-id")?.textContent ?? "") !== old, first);
    expect(await page.locator("#retry-of-link").innerText()).toBe(first);
    // The same knobs fail it at step 3 again, after step 2 ran again. (The page names the new run
    // before its stream has told anything: its log, not the status shown, says when it has ended.)
    const log = () => page.locator("#detail-log li").allInnerTexts();
    await expect.poll(async () => (await log()).some((line) => line.includes("Simulated failure at step 3 of 3")), { timeout: 15_000 }).toBe(true);
    expect((await log()).some((line) => line.includes(`Retry of ${first}: the output of step 1 was copied, not run again`))).toBe(true);
    const progress = (await log()).filter((line) => /^PROGRESS/i.test(line));
    expect(progress.some((line) => line.includes("step_2"))).toBe(true);
    expect(progress.some((line) => line.includes("step_1"))).toBe(false);
    // The new run offers its own steps, from its own first unfinished one.
    expect(await page.locator("#retry-button").innerText()).toBe("Retry from step 3");
    expect(await page.locator("#retry-from").inputValue()).toBe("3");
    expect(problems).toEqual([]);
    await page.close();
  });

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
      expect(told.filter((event) => event.job_id === id)).toEqual([]);
      await page.waitForSelector("#detail-status.failed", { timeout: 15_000 });
      await expect.poll(() => page.locator("#retry-button").innerText()).toBe("Retry from step 3");
      expect(told.filter((event) => event.job_id === id)).toEqual([]);
      await page.selectOption("#retry-from", "2");
      await caughtUp((event) => event.job_id === id && event.status === "failed");
      expect(told.some((event) => event.job_id === id && event.status === "running")).toBe(true);
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
      expect(told.some((event) => event.job_id === id && event.status === "awaiting_input")).toBe(false);
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
      expect(told.filter((event) => event.job_id === id)).toEqual([]);
      expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
      const since = await page.evaluate(() => (window as unknown as { lists: string[][] }).lists.length);
      await caughtUp((event) => event.job_id === id && event.event === "deleted");
      expect(told.some((event) => event.job_id === id && event.status === "succeeded")).toBe(true);
      const lists = await page.evaluate(() => (window as unknown as { lists: string[][] }).lists);
      expect(lists.slice(since).filter((ids) => ids.includes(id))).toEqual([]);
      expect(await row(page, id).count()).toBe(0);
      expect(problems).toEqual([]);
    } finally {
      await close();
    }
  });

  it("on a phone, a delayed run picked from the list comes into view, says when it starts, and is deleted once cancelled", async () => {
    // Older runs below it in the list, so that the run's panel starts below the screen.
    for (let i = 0; i < 12; i++) await submitOverApi({ prompt: "Filler", config: { simulate: { steps: 1, step_ms: 1 } } });
    const id = await submitOverApi({ prompt: "Later", delay_seconds: 600 });
    const { page, problems } = await open(`${BASE}/`, { width: 390, height: 844 });
    await row(page, id).waitFor();
    expect(await page.evaluate(() => document.getElementById("detail")!.getBoundingClientRect().top > innerHeight)).toBe(true);
    await row(page, id).click();
    await page.waitForFunction((job) => document.getElementById("detail-id")?.textContent === job, id);
    // One column: the run is below the form and the list, and is brought into view (its id and status).
    const inView = () => page.evaluate(() => {
      const box = document.querySelector("#detail .detail-head")!.getBoundingClientRect();
      return box.top >= 0 && box.bottom <= innerHeight;
    });
    await expect.poll(inView).toBe(true);
    const scheduled = (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()).scheduled_for as string;
    expect(await page.locator("#detail-step").innerText()).toBe(`Starts at ${await page.evaluate((at) => new Date(at).toLocaleString(), scheduled)}`);
    expect(await page.locator("#delete-button").isDisabled()).toBe(true);
    expect(await page.locator("#delete-rule").innerText()).toBe("A queued job must be cancelled first.");
    await page.screenshot({ path: `${SHOTS}/delayed-phone.png`, fullPage: true });
    await page.click("#cancel-button");
    await page.waitForSelector("#detail-status.cancelled");
    expect(await page.locator("#delete-rule").isHidden()).toBe(true);
    await page.click("#delete-button");
    await row(page, id).waitFor({ state: "detached" });
    expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a run waiting behind its concurrency key shows its place in line", async () => {
    const key = `k${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await submitOverApi({ prompt: `Keyed ${i}`, concurrency_key: key, config: { simulate: { steps: 3, step_ms: 5000 } } }));
    // Two run at once per key (MAX_RUNNING_PER_KEY): the third waits, first in line.
    const { page, problems } = await open(`${BASE}/`);
    await row(page, ids[2]).click();
    await page.waitForSelector("#detail-status.queued");
    expect(await page.locator("#detail-step").innerText()).toBe("Place in line: 1");
    expect(problems).toEqual([]);
    await page.close();
    for (const id of ids) expect((await fetch(`${BASE}/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
  });

  it("a watched run deleted elsewhere leaves the view quietly", async () => {
    const id = await submitOverApi({ prompt: "Deleted from afar", config: { simulate: { steps: 3, step_ms: 5000 } } });
    const { page, problems } = await open(`${BASE}/`);
    await row(page, id).click();
    await page.waitForSelector("#detail-status.running");
    // Another tab, the CLI or a bulk delete: cancelled and deleted at once.
    expect((await fetch(`${BASE}/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
    await row(page, id).waitFor({ state: "detached" });
    await page.waitForSelector("#detail-body", { state: "hidden" });
    await page.waitForTimeout(500);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    // The browser reports the page's last read of the run, which found it gone; nothing else.
    expect(problems.filter((problem) => !problem.includes("the server responded with a status of 404"))).toEqual([]);
    await page.close();
  });

  it("a job that asks for a person is answered from the page", async () => {
    const { page, problems } = await open(`${BASE}/`);
    await submitRun(page, "Draft, then ask", { steps: 2, step_ms: 100, input_at_step: 1 });
    await page.waitForSelector("#input-panel:not([hidden])", { timeout: 15_000 });
    expect(await page.locator("#input-prompt").innerText()).toMatch(/^Review the answer of step step_1/);
    // The API deletes only a finished job: the page says so instead of offering a refusal.
    expect(await page.locator("#delete-button").isDisabled()).toBe(true);
    expect(await page.locator("#delete-rule").innerText()).toBe("A job awaiting input must be cancelled first.");
    await page.screenshot({ path: `${SHOTS}/awaiting-input.png` });
    await answerWhenAsked(page, "approve", "Looks good");
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    expect(await page.locator("#input-panel").isHidden()).toBe(true);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("an answer whose reply is lost, given again, is given once: the page shows the run going on, not a refusal", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "Ask, then lose the reply", { steps: 2, step_ms: 100, input_at_step: 1 });
    await page.waitForSelector("#input-panel:not([hidden])", { timeout: 15_000 });
    const sent: string[] = [];
    await page.route(`**/api/v1/runs/${id}/input`, async (route) => {
      sent.push(route.request().headers()["idempotency-key"]);
      if (sent.length > 1) return route.continue();
      await route.fetch();
      return route.abort("connectionreset");
    });
    await page.fill("#input-text", "Shorter, please");
    await page.click("[data-answer=revise]");
    await page.waitForSelector("#notice:not([hidden])");
    // Given again, as a person does: the same answer, answered with the run; the step runs again once and asks again.
    await page.click("[data-answer=revise]");
    await expect.poll(() => sent.length).toBe(2);
    expect(new Set(sent).size).toBe(1);
    await page.waitForSelector("#notice", { state: "hidden" });
    await page.waitForFunction(() => document.getElementById("input-output")?.textContent?.includes("(revised after: Shorter, please)"), undefined, { timeout: 15_000 });
    await page.unroute(`**/api/v1/runs/${id}/input`);
    await answerWhenAsked(page, "approve", "");
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    const events = await (await fetch(`${BASE}/api/v1/runs/${id}/stream`)).text();
    expect(events.match(/event: input_required/g)).toHaveLength(2);
    expect(problems.filter((p) => !/ERR_CONNECTION_RESET/.test(p))).toEqual([]);
    await page.close();
  });

  it("a revised answer takes the place of the earlier one in the output shown", async () => {
    const { page, problems } = await open(`${BASE}/`);
    await submitRun(page, "Draft, then revise", { steps: 2, step_ms: 100, input_at_step: 2 });
    await answerWhenAsked(page, "revise", "shorter");
    await page.locator("#detail-output", { hasText: "(revised after: shorter)" }).waitFor({ timeout: 15_000 });
    expect(await page.locator("#detail-output").textContent()).toBe(
      "Step 1/2 (step_1): simulated answer to: Draft, then revise\nStep 2/2 (step_2): simulated answer to: Draft, then revise (revised after: shorter)\n",
    );
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a rejected answer is not kept: Retry starts at the step rejected, which asks again", async () => {
    const { page, problems } = await open(`${BASE}/`);
    await submitRun(page, "Draft, then reject", { steps: 3, step_ms: 100, input_at_step: 2 });
    await answerWhenAsked(page, "reject", "Off topic");
    await page.waitForSelector("#detail-status.failed", { timeout: 20_000 });
    await expect.poll(() => page.locator("#retry-button").innerText()).toBe("Retry from step 2");
    await page.click("#retry-button");
    await page.waitForSelector("#input-panel:not([hidden])", { timeout: 15_000 });
    expect(await page.locator("#input-prompt").innerText()).toMatch(/^Review the answer of step step_2/);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("filters the list by status and tag, live", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const tag = `f${Date.now()}`;
    const tagged = await submitRun(page, "Tagged", { steps: 1, step_ms: 50 }, tag);
    const untagged = await submitRun(page, "Untagged", { steps: 1, step_ms: 50 });
    await filterByTag(page, tag);
    await expect.poll(() => page.locator("#run-list li").evaluateAll((items) => items.map((i) => (i as HTMLElement).dataset.id))).toEqual([tagged]);
    expect(await page.locator("#runs-total").innerText()).toBe("(1)");
    // A new run with the tag arrives from the feed; one without does not.
    const third = await submitRun(page, "Tagged too", { steps: 1, step_ms: 50 }, tag);
    await row(page, third).waitFor();
    expect(await row(page, untagged).count()).toBe(0);
    // An edit that leaves the filter as it was lists nothing again and keeps the feed; the next
    // real change lists once, and opens the feed once, for the new filter.
    const asked: string[] = [];
    page.on("request", (request) => {
      const url = new URL(request.url());
      if (url.pathname === "/api/v1/runs" || url.pathname === "/api/v1/runs/events") asked.push(`${url.pathname}?${url.searchParams}`);
    });
    await filterByTag(page, `${tag} `);
    await page.selectOption("#filter-form select[name=status]", "failed");
    await expect.poll(() => page.locator("#run-list li").count()).toBe(0);
    await expect.poll(() => asked.filter((request) => request.includes("status=failed")).length).toBe(2);
    expect(asked.map((request) => request.replace(/&page_size=\d+/, "")).sort()).toEqual([
      `/api/v1/runs/events?status=failed&tag=${tag}`,
      `/api/v1/runs?status=failed&tag=${tag}`,
    ].sort());
    await page.screenshot({ path: `${SHOTS}/filtered.png` });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("shows a page of 50 runs, and the next ones on asking", async () => {
    const tag = `p${Date.now()}`;
    // Runs that wait an hour: they stay as they are while the page is read.
    const ids: string[] = [];
    for (let i = 0; i < 53; i++) {
      ids.push(await submitOverApi({ prompt: `page ${i}`, tags: [tag], delay_seconds: 3600 }));
    }
    const { page, problems } = await open(`${BASE}/`);
    await filterByTag(page, tag);
    const shown = async () => (await page.locator("#run-list li").evaluateAll((items) => items.map((i) => (i as HTMLElement).dataset.id!))).sort();
    const totalShown = () => page.locator("#runs-total").innerText();
    // The newest 50, and the total of all.
    await expect.poll(shown).toEqual(ids.slice(3).sort());
    await expect.poll(totalShown).toBe("(53)");
    // The feed tells of older runs, on the page not shown yet: a change is neither shown nor
    // counted again; a deletion takes one off the total.
    expect((await fetch(`${BASE}/api/v1/runs/${ids[0]}/cancel`, { method: "POST" })).status).toBe(200);
    expect((await fetch(`${BASE}/api/v1/runs/${ids[1]}/cancel`, { method: "POST" })).status).toBe(200);
    expect((await fetch(`${BASE}/api/v1/runs/${ids[1]}`, { method: "DELETE" })).status).toBe(204);
    await expect.poll(totalShown).toBe("(52)");
    expect(await shown()).toEqual(ids.slice(3).sort());
    await page.click("#runs-more");
    await expect.poll(shown).toEqual(ids.filter((id) => id !== ids[1]).sort());
    expect(await row(page, ids[0]).getAttribute("data-status")).toBe("cancelled");
    expect(await totalShown()).toBe("(52)");
    expect(await page.locator("#runs-more").isHidden()).toBe(true);
    expect(problems).toEqual([]);
    await page.close();
  });
});

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
    const page = await browser.newPage();
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
    const page = await browser.newPage();
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
    const page = await browser.newPage();
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

describe("the reference frontend in a deployment, with a scoped token", () => {
  /** A request of the tenant's backend, with its key. */
  const withKey = (path: string, init: RequestInit = {}) =>
    fetch(`${KEYED}${path}`, { ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${KEY}` } });
  /** Runs a test leaves unfinished go, so that they hold none of the tenant's run slots. */
  const forceDelete = (...ids: string[]) => Promise.all(ids.map((id) => withKey(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })));

  async function mint(body: Record<string, unknown>): Promise<string> {
    const res = await withKey("/api/v1/tokens", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    expect(res.status).toBe(201);
    return (await res.json()).token;
  }

  it("works with a token passed in the address's fragment, within its reach", async () => {
    const token = await mint({ scopes: ["read", "stream", "submit", "cancel", "delete", "input"], session_id: "browser-user", max_submits: 3 });
    const { page, problems } = await open(`${KEYED}/#token=${token}`);
    // The token leaves the address at once.
    expect(new URL(page.url()).hash).toBe("");
    const id = await submitRun(page, "From a browser", { steps: 2, step_ms: 200 });
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    await row(page, id).waitFor();
    const job = await (await withKey(`/api/v1/runs/${id}`)).json();
    expect(job.session_id).toBe("browser-user");
    await page.screenshot({ path: `${SHOTS}/with-token.png` });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("shows the submits a token has left; a retry past its limit is refused plainly, makes no run, and then waits", async () => {
    const token = await mint({ scopes: ["read", "stream", "submit"], session_id: "two-submits", max_submits: 2 });
    const { page, problems } = await open(`${KEYED}/#token=${token}`);
    expect(await page.locator("#submits-left").innerText()).toBe("This token may start 2 more runs.");
    const id = await submitRun(page, "Fails once", { steps: 2, step_ms: 50, fail_at_step: 2 });
    await page.waitForSelector("#detail-status.failed", { timeout: 15_000 });
    await submitsLeftSaid(page, "This token may start 1 more run.");
    // The last submit is spent elsewhere (another tab of the same user), unknown to this page.
    const elsewhere = await fetch(`${KEYED}/api/v1/runs`, {
      method: "POST",
      headers: { "content-type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ prompt: "from another tab", config: { simulate: { steps: 1, step_ms: 1 } } }),
    });
    expect(elsewhere.status).toBe(202);
    const other = (await elsewhere.json()).job_id;
    await page.click("#retry-button");
    await page.waitForSelector("#notice:not([hidden])");
    expect(await page.locator("#notice").innerText()).toBe("Token submit limit reached");
    expect(await page.locator("#detail-id").innerText()).toBe(id);
    // The page has read what is left: nothing, so neither Submit nor Retry is offered.
    await submitsLeftSaid(page, "This token may start 0 more runs.");
    expect(await page.locator("#submit-form button[type=submit]").isDisabled()).toBe(true);
    expect(await page.locator("#retry-button").isDisabled()).toBe(true);
    const listed = await (await withKey("/api/v1/runs?session_id=two-submits")).json();
    expect(listed.jobs.map((job: { job_id: string }) => job.job_id).sort()).toEqual([id, other].sort());
    // The refusal is the API's 403, not a fault of the page.
    expect(problems.filter((problem) => !problem.includes("403"))).toEqual([]);
    await page.close();
  });

  /** A run of the tenant, submitted with its key, that runs until it is cancelled. */
  async function longRun(session: string): Promise<string> {
    const res = await withKey("/api/v1/runs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "long", session_id: session, config: { simulate: { steps: 2, step_ms: 600_000 } } }),
    });
    expect(res.status).toBe(202);
    return (await res.json()).job_id;
  }

  it("a token's tags, agent and model settings are shown in the form, fixed, and its runs carry them", async () => {
    const token = await mint({ scopes: ["read", "stream", "submit"], tags: ["team-a", "web"], max_submits: 1, agent: "recipe:summarize", config: { model: "small", max_tokens: 200 } });
    const { page, problems } = await open(`${KEYED}/#token=${token}`);
    for (const [name, value] of [["tags", "team-a, web"], ["agent_file", "recipe:summarize"], ["model", "small"], ["max_tokens", "200"]]) {
      const field = page.locator(`input[name=${name}]`);
      expect(await field.inputValue()).toBe(value);
      expect(await field.isEditable()).toBe(false);
    }
    expect(await page.locator("input[name=temperature]").isEditable()).toBe(true);
    await page.fill("#prompt", "tagged by its token");
    await page.click("#submit-form button[type=submit]");
    await page.waitForFunction(() => (document.getElementById("detail-id")?.textContent ?? "").startsWith("run_"));
    const id = await page.locator("#detail-id").innerText();
    const job = await (await withKey(`/api/v1/runs/${id}`)).json();
    expect(job.tags).toEqual(["team-a", "web"]);
    expect(job.agent_id).toBe("recipe:summarize");
    expect(problems).toEqual([]);
    await page.close();
  });

  it("on a phone, the page with its token field fits the screen's width", async () => {
    const token = await mint({ scopes: ["read", "stream", "submit"], session_id: "phone-user", max_submits: 2 });
    const { page, problems } = await open(`${KEYED}/#token=${token}`, { width: 390, height: 844 });
    expect(await page.locator("#token-form").isVisible()).toBe(true);
    // No sideways scrolling: the header wraps, the token's field on a line of its own.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    const field = await page.locator("#token").boundingBox();
    expect(field!.x + field!.width).toBeLessThanOrEqual(390);
    await page.screenshot({ path: `${SHOTS}/phone-token.png` });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("offers only what the token allows: a viewer's page has no New run, Cancel or Delete", async () => {
    const id = await longRun("viewers");
    const token = await mint({ scopes: ["read", "stream"], session_id: "viewers" });
    const { page, problems } = await open(`${KEYED}/#token=${token}`);
    expect(await page.locator("#compose-denied").innerText()).toBe("This token cannot start runs.");
    expect(await page.locator("#submit-form").isHidden()).toBe(true);
    await row(page, id).click();
    await page.waitForSelector("#detail-status.running");
    expect(await page.locator("#cancel-button").isHidden()).toBe(true);
    expect(await page.locator("#delete-button").isHidden()).toBe(true);
    expect(await page.locator("#delete-rule").isHidden()).toBe(true);
    await page.screenshot({ path: `${SHOTS}/viewer-token.png` });
    expect(problems).toEqual([]);
    await page.close();
    await forceDelete(id);
  });

  it("a token for some runs shows just those, the one watched kept up to date in the list; one it starts is out of its reach", async () => {
    const watched = await longRun("shared-a");
    const other = await longRun("shared-b");
    const notShared = await longRun("shared-a"); // of the same session, but not the token's
    const token = await mint({ scopes: ["read", "stream", "cancel"], runs: [watched, other] });
    const { page, problems } = await open(`${KEYED}/#token=${token}`, undefined, `#run-list li[data-id="${other}"]`);
    await row(page, watched).waitFor();
    expect((await page.locator("#run-list li").evaluateAll((items) => items.map((li) => (li as HTMLElement).dataset.id))).sort()).toEqual([watched, other].sort());
    // No list to filter and no feed: such a token may do neither (the API answers 403).
    expect(await page.locator("#filter-form").isHidden()).toBe(true);
    expect(await page.locator("#feed-state").isHidden()).toBe(true);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    await row(page, watched).click();
    await page.waitForSelector("#detail-status.running");
    await page.click("#cancel-button");
    await page.waitForSelector(`#run-list li[data-id="${watched}"][data-status="cancelled"]`, { timeout: 10_000 });
    expect(await row(page, other).getAttribute("data-status")).toBe("running");
    expect(await page.locator("#delete-button").isHidden()).toBe(true);
    await page.screenshot({ path: `${SHOTS}/runs-token.png` });
    expect(problems).toEqual([]);
    await page.close();
    // A token for some runs that may also submit: the run it starts is out of its reach, and the page says so.
    const starter = await mint({ scopes: ["read", "stream", "submit"], runs: [watched] });
    const second = await open(`${KEYED}/#token=${starter}`, undefined, `#run-list li[data-id="${watched}"]`);
    await second.page.fill("#prompt", "out of reach");
    await second.page.click("#submit-form button[type=submit]");
    await second.page.waitForSelector("#started:not([hidden])");
    const started = /^Started (run_\w+); this token reaches only the runs it names, so it cannot show this one\.$/.exec(await second.page.locator("#started").innerText());
    expect(started).not.toBeNull();
    expect(await second.page.locator("#notice").isHidden()).toBe(true);
    expect(await second.page.locator("#detail-body").isHidden()).toBe(true);
    expect(second.problems).toEqual([]);
    await second.page.close();
    await forceDelete(watched, other, notShared, started![1]);
  });

  it("a token that may only start runs: the page offers New run, says it cannot see runs, and names the run it started", async () => {
    const token = await mint({ scopes: ["submit"], max_submits: 2 });
    const { page, problems } = await open(`${KEYED}/#token=${token}`, undefined, "#runs-denied:not([hidden])");
    expect(await page.locator("#runs-denied").innerText()).toBe("This token cannot see runs.");
    // Nothing it may not do is tried: no list, no feed, no run to pick, and no refusal shown.
    for (const hidden of ["#filter-form", "#feed-state", "#detail", "#notice"]) expect(await page.locator(hidden).isHidden()).toBe(true);
    await page.fill("#prompt", "started, never seen");
    await page.click("#submit-form button[type=submit]");
    await page.waitForSelector("#started:not([hidden])");
    const started = /^Started (run_\w+); this token cannot see runs, so it cannot show this one\.$/.exec(await page.locator("#started").innerText());
    expect(started).not.toBeNull();
    expect((await withKey(`/api/v1/runs/${started![1]}`)).status).toBe(200);
    await submitsLeftSaid(page, "This token may start 1 more run.");
    expect(await page.locator("#notice").isHidden()).toBe(true);
    await page.screenshot({ path: `${SHOTS}/submit-only-token.png` });
    expect(problems).toEqual([]);
    await page.close();
    await forceDelete(started![1]);
  });

  it("a token that may read runs but not watch them: the run shown and the list are read again, and nothing is refused", async () => {
    const token = await mint({ scopes: ["read", "submit"], session_id: "readers", max_submits: 1 });
    const { page, problems } = await open(`${KEYED}/#token=${token}`, undefined, "#feed-state:text('not live')");
    const id = await submitRun(page, "Read, not streamed", { steps: 2, step_ms: 1500 });
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    expect(await page.locator("#detail-output").innerText()).toContain("simulated answer to: Read, not streamed");
    expect(await page.locator("#detail-log").innerText()).toMatch(/running \(read every 2 s: this token cannot watch runs\)[\s\S]*succeeded/);
    await page.waitForSelector(`#run-list li[data-id="${id}"][data-status="succeeded"]`);
    // A run the backend starts in the token's session shows up when the list is next read.
    const res = await withKey("/api/v1/runs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "from the backend", session_id: "readers", config: { simulate: { steps: 1, step_ms: 1 } } }),
    });
    const other = (await res.json()).job_id;
    await row(page, other).waitFor({ timeout: 15_000 });
    await page.screenshot({ path: `${SHOTS}/read-only-token.png` });
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a token that may read runs but not watch them: a failed run shows the output it produced before it failed", async () => {
    const token = await mint({ scopes: ["read", "submit"], session_id: "readers-of-failures", max_submits: 1 });
    const { page, problems } = await open(`${KEYED}/#token=${token}`, undefined, "#feed-state:text('not live')");
    await submitRun(page, "Fails at step 2", { steps: 2, step_ms: 100, fail_at_step: 2 });
    await page.waitForSelector("#detail-status.failed", { timeout: 20_000 });
    await expect.poll(() => page.locator("#detail-output").textContent()).toBe("Step 1/2 (step_1): simulated answer to: Fails at step 2\n");
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a token that expires while the page is open: its feed and stream close, and the page says so", async () => {
    const id = await longRun("expiring");
    const live = await mint({ scopes: ["read", "stream"], session_id: "expiring" });
    const payload = JSON.parse(Buffer.from(live.slice(4, live.indexOf(".")), "base64url").toString());
    const expires = Math.floor(Date.now() / 1000) + 4;
    const token = await mintToken(
      { id: "expiring", tenant: "web", key: payload.k, scopes: ["read", "stream"], runs: null, session_id: "expiring", tags: null, expires, max_submits: null, concurrency_key: null, priority: null, config: null, agent: null, metadata: null },
      TOKEN_SECRET,
    );
    const { page, problems } = await open(`${KEYED}/#token=${token}`);
    await row(page, id).click();
    await page.waitForSelector("#detail-status.running");
    await page.waitForSelector("#notice:not([hidden])", { timeout: 15_000 });
    expect(Date.now()).toBeGreaterThanOrEqual(expires * 1000);
    expect(await page.locator("#notice").innerText()).toBe("Token expired");
    expect(await page.locator("#token-form").isVisible()).toBe(true);
    await page.waitForSelector("#feed-state.down");
    await page.waitForFunction(() => document.getElementById("feed-state")?.textContent === "offline");
    // EventSource came back and was refused: the API's 401, not a fault of the page.
    expect(problems.filter((problem) => !problem.includes("401"))).toEqual([]);
    await page.close();
    await forceDelete(id);
  });

  it("without a credential, or with an expired token, is refused and asks for a token", async () => {
    const bare = await browser.newPage();
    await bare.goto(`${KEYED}/`, { waitUntil: "load" });
    await bare.waitForSelector("#notice:not([hidden])");
    expect(await bare.locator("#notice").innerText()).toBe("Unauthorized");
    expect(await bare.locator("#token-form").isVisible()).toBe(true);
    await bare.close();

    const live = await mint({ scopes: ["read", "stream"], session_id: "browser-user" });
    const payload = JSON.parse(Buffer.from(live.slice(4, live.indexOf(".")), "base64url").toString());
    const expired = await mintToken(
      { id: "expired", tenant: "web", key: payload.k, scopes: ["read", "stream"], runs: null, session_id: "browser-user", tags: null, expires: Math.floor(Date.now() / 1000) - 5, max_submits: null, concurrency_key: null, priority: null, config: null, agent: null, metadata: null },
      TOKEN_SECRET,
    );
    const page = await browser.newPage();
    await page.goto(`${KEYED}/#token=${expired}`, { waitUntil: "load" });
    await page.waitForSelector("#notice:not([hidden])");
    expect(await page.locator("#notice").innerText()).toBe("Token expired");
    expect(await page.locator("#token-form").isVisible()).toBe(true);
    expect(await page.locator("#runs-empty").isHidden()).toBe(true);
    await page.screenshot({ path: `${SHOTS}/expired-token.png` });
    // A fresh token pasted in the form brings the page back.
    await page.fill("#token", live);
    await page.click("#token-form button");
    await page.waitForSelector("#feed-state.live", { timeout: 15_000 });
    await page.waitForSelector("#notice", { state: "hidden" });
    await page.close();
  });
});
