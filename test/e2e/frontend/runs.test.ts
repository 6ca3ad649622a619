/**
 * The reference frontend at `/` in a real headless Chromium (Debian's package), against `wrangler
 * dev` in local development (no keys): runs submitted, watched to their end, cancelled, deleted.
 * Screenshots are kept in test-results/frontend/. (The list's filters and pages: list.test.ts.)
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { Locator } from "playwright-core";
import { BASE } from "../server";
import { SHOTS, open, row, submitOverApi, submitRun, withServerAndChromium } from "./page";
import { insecureOrigin, launchChromiumWithInsecureName } from "../browser";
import { startProxy } from "../proxy";

withServerAndChromium();

/** The time from one of the API's times to another, as the page tells one under a minute (tenths under 10 s). */
function secondsBetween(from: string, to: string): string {
  const seconds = (Date.parse(to) - Date.parse(from)) / 1000;
  return `${seconds < 10 ? seconds.toFixed(1) : Math.floor(seconds)}s`;
}

describe("the reference frontend in local development: runs submitted, watched, cancelled and deleted", () => {
  it("submit, watch progress live to the end, read the output, delete", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "Write about the edge", { steps: 3, step_ms: 400 }, "demo, docs");
    // The run appears in the list from the feed, with its tags, and runs.
    await row(page, id).waitFor();
    expect(await row(page, id).locator(".tag").allInnerTexts()).toEqual(["demo", "docs"]);
    await page.waitForSelector("#detail-status.running");
    expect(await page.locator("#delete-button").isDisabled()).toBe(true);
    expect(await page.locator("#delete-rule").innerText()).toBe("A running job must be cancelled first.");
    // Started, not yet ended: when it was submitted, and how long it waited to start.
    expect(await page.locator("#detail-times").innerText()).toMatch(/^Submitted .+ · started (at once|\d+\.\ds later)$/);
    await page.screenshot({ path: `${SHOTS}/running.png` });
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    await page.waitForFunction(() => (document.getElementById("detail-output")?.textContent ?? "").includes("Step 3/3"));
    const output = await page.locator("#detail-output").innerText();
    expect(output).toContain("simulated answer to: Write about the edge");
    const log = await page.locator("#detail-log li").allInnerTexts();
    expect(log.some((line) => /PROGRESS\s*100%/i.test(line))).toBe(true);
    await expect.poll(() => row(page, id).getAttribute("data-status")).toBe("succeeded");
    // The bars are progress bars to assistive technology, each with the value it shows.
    await expect.poll(() => page.getByRole("progressbar", { name: "Progress", exact: true }).getAttribute("aria-valuenow")).toBe("100");
    expect(await page.getByRole("progressbar", { name: `Progress of ${id}` }).getAttribute("aria-valuenow")).toBe("100");
    // The row's status is as wide as its word, as the panel's is, not stretched to the row's agent below it.
    const width = async (pill: Locator) => (await pill.boundingBox())!.width;
    expect(Math.abs((await width(row(page, id).locator(".status"))) - (await width(page.locator("#detail-status"))))).toBeLessThan(1);
    // What the page shows is what the API says.
    const job = await (await fetch(`${BASE}/api/v1/runs/${id}`)).json();
    expect(job.tags).toEqual(["demo", "docs"]);
    expect(await page.locator("#detail-usage").innerText()).toBe(`${job.usage.total_tokens} tokens in 3 model calls (estimated)`);
    // When it was submitted (in the browser's locale), how long it waited to start and how long it ran, from the API's times.
    const submitted = await page.evaluate((at) => new Date(at).toLocaleString(), job.created_at);
    const started = Date.parse(job.started_at) - Date.parse(job.created_at) < 50 ? "at once" : `${secondsBetween(job.created_at, job.started_at)} later`;
    expect(await page.locator("#detail-times").innerText()).toBe(`Submitted ${submitted} · started ${started} · ran ${secondsBetween(job.started_at, job.completed_at)}`);
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

  it("a refusal is told in the API's words, each field's complaint; one from a gateway in front of the service, which has none, by its status, once the submit was sent again twice", async () => {
    // A gateway that cannot reach the service for a submit, and answers in its own words (Kong's).
    let submits = 0;
    const gateway = await startProxy(BASE, {
      answer: (method, pathname) => {
        if (method !== "POST" || pathname !== "/api/v1/runs") return undefined;
        submits++;
        return { status: 502, type: "application/json", body: '{"message":"An invalid response was received from the upstream server"}' };
      },
    });
    const { page, problems } = await open(`${BASE}/`);
    await page.fill("#prompt", "Tagged badly");
    await page.fill("input[name=tags]", "fine, not fine");
    await page.click("#submit-form button[type=submit]");
    await expect.poll(() => page.locator("#notice").innerText()).toBe("a tag is 1 to 64 of A-Za-z0-9_.:-");
    await page.close();

    const behind = await open(`${gateway.base}/`);
    await behind.page.fill("#prompt", "Through the gateway");
    await behind.page.click("#submit-form button[type=submit]");
    // Sent again twice, 1 s apart (the gateway might have passed it on), then told.
    await expect.poll(() => behind.page.locator("#notice").innerText(), { timeout: 10_000 }).toBe("The service answered 502 Bad Gateway.");
    expect(submits).toBe(3);
    expect(await behind.page.locator("#submit-form button[type=submit]").isEnabled()).toBe(true);
    expect(problems.filter((p) => !/status of 422/.test(p))).toEqual([]);
    expect(behind.problems.filter((p) => !/status of 502/.test(p))).toEqual([]);
    await behind.page.close();
    await gateway.close();
  });

  it("works from an address that is not a secure context (a phone on the LAN, through a proxy): a run submitted, failed, retried and the retry followed to its end", async () => {
    const proxy = await startProxy(BASE, {});
    const lan = await launchChromiumWithInsecureName();
    try {
      const page = await lan.newPage({ viewport: { width: 1400, height: 900 } });
      const problems: string[] = [];
      page.on("pageerror", (error) => problems.push(`page: ${error.message}`));
      page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
      const keys: (string | undefined)[] = [];
      page.on("request", (request) => request.method() === "POST" && keys.push(request.headers()["idempotency-key"]));
      await page.goto(`${insecureOrigin(proxy.base)}/`, { waitUntil: "load" });
      await page.waitForSelector("#feed-state.live", { timeout: 15_000 });
      expect(await page.evaluate(() => window.isSecureContext)).toBe(false);

      const id = await submitRun(page, "From the LAN", { steps: 2, step_ms: 1, fail_at_step: 2 });
      await page.waitForSelector("#detail-status.failed", { timeout: 20_000 });
      await page.click("#retry-button");
      await page.waitForFunction((old) => (document.getElementById("detail-id")?.textContent ?? "").startsWith("run_") && document.getElementById("detail-id")?.textContent !== old, id);
      const retried = await page.locator("#detail-id").innerText();
      await page.waitForSelector("#detail-status.failed", { timeout: 20_000 });
      expect((await (await fetch(`${BASE}/api/v1/runs/${retried}`)).json()).retry_of).toBe(id);
      // The submit and the retry each went with a key of the page's own.
      expect(keys).toHaveLength(2);
      for (const key of keys) expect(key).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(keys[0]).not.toBe(keys[1]);
      expect(problems).toEqual([]);
    } finally {
      await lan.close();
      await proxy.close();
    }
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

  it("a failed run whose finished steps were too large for the stream's events shows their stored output", async () => {
    // Each step writes 20,000 bytes, over what one output event carries: the stream logs their size instead.
    const id = await submitOverApi({ prompt: "Large then failing", config: { simulate: { steps: 3, step_ms: 1, output_bytes: 60_000, fail_at_step: 3 } } });
    const { page, problems } = await open(`${BASE}/`);
    await row(page, id).click();
    await page.waitForSelector("#detail-status.failed", { timeout: 15_000 });
    const res = await fetch(`${BASE}/api/v1/runs/${id}/output`);
    expect(res.headers.get("X-Run-Status")).toBe("failed");
    const stored = await res.text();
    expect(stored.length).toBe(40_000);
    await expect.poll(() => page.locator("#detail-output").textContent()).toBe(stored);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a run whose output is over a MiB shows its first MiB, says so, and saves it whole on asking", async () => {
    const id = await submitOverApi({ prompt: "Long", config: { simulate: { steps: 2, step_ms: 1, output_bytes: 1_500_000 } } });
    const { page, problems } = await open(`${BASE}/`);
    await row(page, id).click();
    await page.waitForSelector("#output-cut:not([hidden])", { timeout: 15_000 });
    expect(await page.locator("#output-cut-text").innerText()).toBe("The first 1.0 MiB of 1.4 MiB.");
    const stored = Buffer.from(await (await fetch(`${BASE}/api/v1/runs/${id}/output`)).arrayBuffer());
    expect(await page.locator("#detail-output").textContent()).toBe(stored.subarray(0, 1024 * 1024).toString("utf8"));
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#output-download")]);
    expect(download.suggestedFilename()).toBe(`${id}.txt`);
    expect(readFileSync((await download.path())!).equals(stored)).toBe(true);
    await page.screenshot({ path: `${SHOTS}/output-cut.png` });

    // A first MiB that ends inside a character shows the characters it holds whole, and no replacement for the one cut.
    // (The output of a run over 16 KiB is read from storage, not from its stream's end.)
    const cut = await submitOverApi({ prompt: "Cut", config: { simulate: { steps: 1, step_ms: 1, output_bytes: 20_000 } } });
    await page.route(`${BASE}/api/v1/runs/${cut}/output`, (route) =>
      route.fulfill({
        status: 206,
        headers: { "Content-Type": "text/plain; charset=utf-8", "Content-Range": "bytes 0-1048575/2000000" },
        body: Buffer.concat([Buffer.from("é".repeat(1024 * 512 - 1) + "a"), Buffer.from("é").subarray(0, 1)]),
      }),
    );
    await row(page, cut).click();
    await page.waitForSelector("#output-cut:not([hidden])", { timeout: 15_000 });
    const text = (await page.locator("#detail-output").textContent())!;
    expect(text.endsWith("éa")).toBe(true);
    expect(text).not.toContain("\uFFFD");
    expect(await page.locator("#output-cut-text").innerText()).toBe("The first 1.0 MiB of 1.9 MiB.");
    // A short output is shown whole, with nothing said.
    const short = await submitOverApi({ prompt: "Short", config: { simulate: { steps: 1, step_ms: 1 } } });
    await row(page, short).click();
    await page.waitForFunction(() => (document.getElementById("detail-output")?.textContent ?? "").includes("simulated answer to: Short"), undefined, { timeout: 15_000 });
    expect(await page.locator("#output-cut").isHidden()).toBe(true);
    expect(problems).toEqual([]);
    await page.close();
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
    const submitted = `Submitted ${await page.evaluate((at) => new Date(at).toLocaleString(), (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()).created_at)}`;
    expect(await page.locator("#detail-times").innerText()).toBe(submitted);
    expect(await page.locator("#delete-button").isDisabled()).toBe(true);
    expect(await page.locator("#delete-rule").innerText()).toBe("A queued job must be cancelled first.");
    await page.screenshot({ path: `${SHOTS}/delayed-phone.png`, fullPage: true });
    await page.click("#cancel-button");
    await page.waitForSelector("#detail-status.cancelled");
    expect(await page.locator("#delete-rule").isHidden()).toBe(true);
    // It ended without ever starting: no wait to start, no time run.
    const times = await page.locator("#detail-times").innerText();
    expect(times.startsWith(`${submitted} · ended `)).toBe(true);
    expect(times).toMatch(/ · ended (\d+\.\d|\d+)s later without starting$/);
    await page.click("#delete-button");
    await row(page, id).waitFor({ state: "detached" });
    expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a run waiting behind its concurrency key shows its place in line, and once it starts how long it waited", async () => {
    const key = `k${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await submitOverApi({ prompt: `Keyed ${i}`, concurrency_key: key, config: { simulate: { steps: 3, step_ms: 5000 } } }));
    // Two run at once per key (MAX_RUNNING_PER_KEY): the third waits, first in line.
    const { page, problems } = await open(`${BASE}/`);
    await row(page, ids[2]).click();
    await page.waitForSelector("#detail-status.queued");
    expect(await page.locator("#detail-step").innerText()).toBe("Place in line: 1");
    // A place frees: the run starts, and says how long after its submit.
    expect((await fetch(`${BASE}/api/v1/runs/${ids[0]}?force=true`, { method: "DELETE" })).status).toBe(204);
    await page.waitForSelector("#detail-status.running");
    const job = await (await fetch(`${BASE}/api/v1/runs/${ids[2]}`)).json();
    const said = secondsBetween(job.created_at, job.started_at);
    await expect.poll(() => page.locator("#detail-times").innerText()).toMatch(new RegExp(` · started ${said.replace(".", "\\.")} later$`));
    expect(problems).toEqual([]);
    await page.close();
    for (const id of ids.slice(1)) expect((await fetch(`${BASE}/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);
  });

  it("tells how long a run waited and ran in the units of its list's ages: tenths of a second under 10 s, then seconds, minutes, hours", async () => {
    const { page, problems } = await open(`${BASE}/`);
    // The page's own module, as the page loaded it. The import is given as text: vitest rewrites a
    // dynamic import in this file's functions for Node, and the browser has no such helper.
    const told = await page.evaluate(`import("/page.js").then(({ lasting }) => [1234, 9949, 12900, 59999, 192000, 7500000, 90000000, -5].map(lasting))`);
    expect(told).toEqual(["1.2s", "9.9s", "12s", "59s", "3m 12s", "2h 5m", "25h 0m", "0.0s"]);
    expect(problems).toEqual([]);
    await page.close();
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
});
