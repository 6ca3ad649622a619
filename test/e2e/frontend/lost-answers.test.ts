/**
 * The reference frontend in a real headless Chromium against `wrangler dev` in local development,
 * on a link that fails it: an answer lost on its way back, a request held until the run it reads is
 * gone, a refusal while a deploy is under way, the feed and a run's stream cut by one, a refusal
 * whose wait is in words or a date, a request or a stream that never hears back, and the browser
 * offline for a while. The page sends again what is safe to send again (a submit under its
 * idempotency key), and says no more than the user needs.
 */
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { BASE } from "../server";
import { holdRequests, holdUntilDeleted, meetFates, open, row, submitOverApi, submitRun, withServerAndChromium } from "./page";
import { DEPLOYING_BODY, EVENT_STREAMS, startDeployingProxy, startProxy } from "../proxy";

withServerAndChromium();

describe("the reference frontend when answers are lost, held or refused, and while a deploy is under way", () => {
  it("a delete whose answer is lost is sent again by the page, and the run, not found then, is gone from the page without a word", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "Deleted once", { steps: 1, step_ms: 1 });
    await page.waitForSelector("#detail-status.succeeded", { timeout: 20_000 });
    const { statuses: sent } = await meetFates(page, `**/api/v1/runs/${id}`, "DELETE", ["lost"]);
    const notFound = page.waitForResponse((res) => res.request().method() === "DELETE" && res.status() === 404);
    await page.click("#delete-button");
    await notFound;
    // One more turn of the page's event loop: the answer has been handled.
    await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
    expect(sent).toEqual([204, 404]);
    await row(page, id).waitFor({ state: "detached" });
    expect(await page.locator("#detail-body").isHidden()).toBe(true);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    expect(problems.filter((p) => !/ERR_CONNECTION_RESET|404/.test(p))).toEqual([]);
    await page.close();
  });

  it("a run deleted while the page still reads it is left first: neither its stream nor its last read, held until the run is gone, finds it gone", async () => {
    // The run's stream, or the read that follows the stream's result, held by the link until the
    // service has deleted the run (and handed on before the page has the delete's answer).
    for (const held of [(path: string) => path.endsWith("/stream"), (path: string, nth: number) => !path.endsWith("/stream") && nth === 2]) {
      const id = await submitOverApi({ prompt: "Deleted while read", config: { simulate: { steps: 1, step_ms: 1 } } });
      await expect.poll(async () => ((await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()) as { status: string }).status).toBe("succeeded");
      const { page, problems } = await open(`${BASE}/`);
      const holding = holdUntilDeleted(page, id, held);
      await row(page, id).click();
      await page.waitForSelector("#detail-status.succeeded");
      await holding.held;
      await page.click("#delete-button");
      await row(page, id).waitFor({ state: "detached" });
      expect(await holding.givenUp).toBe(true);
      // One more turn of the page's event loop: whatever the held request met has been handled.
      await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
      expect(await page.locator("#detail-body").isHidden()).toBe(true);
      expect(await page.locator("#notice").isHidden()).toBe(true);
      expect(problems).toEqual([]);
      await page.close();
    }
  });

  it("a delete refused (a deploy under way, past the page's tries) leaves the run shown, read and watched again, and says why", async () => {
    const id = await submitOverApi({ prompt: "Not deleted yet", config: { simulate: { steps: 1, step_ms: 1 } } });
    const { page, problems } = await open(`${BASE}/`);
    await row(page, id).click();
    await page.waitForSelector("#detail-status.succeeded", { timeout: 15_000 });
    await page.waitForFunction(() => (document.getElementById("detail-output")?.textContent ?? "").includes("Not deleted yet"));
    const { statuses: sent } = await meetFates(page, `**/api/v1/runs/${id}`, "DELETE", ["503", "503", "503"]);
    const watchedAgain = page.waitForRequest((req) => req.url().includes(`/api/v1/runs/${id}/stream`));
    await page.click("#delete-button");
    await expect.poll(() => page.locator("#notice").innerText(), { timeout: 10_000 }).toBe("Service is being updated; retry shortly");
    expect(sent).toEqual([503, 503, 503]);
    await watchedAgain;
    await page.waitForSelector("#detail-status.succeeded");
    await page.waitForFunction(() => (document.getElementById("detail-output")?.textContent ?? "").includes("Not deleted yet"));
    expect(await page.locator("#detail-id").innerText()).toBe(id);
    expect(await row(page, id).getAttribute("data-status")).toBe("succeeded");
    expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(200);
    expect(problems.filter((problem) => !problem.includes("the server responded with a status of 503"))).toEqual([]);
    await page.close();
    expect((await fetch(`${BASE}/api/v1/runs/${id}`, { method: "DELETE" })).status).toBe(204);
  });

  it("a delete refused with a Retry-After the page cannot read, then with one that is a date, is sent again after each, as asked or after 1 s", async () => {
    const id = await submitOverApi({ prompt: "Deleted on the third try", config: { simulate: { steps: 1, step_ms: 1 } } });
    const { page, problems } = await open(`${BASE}/`);
    await row(page, id).click();
    await page.waitForSelector("#detail-status.succeeded", { timeout: 15_000 });
    // A gateway's refusals: a wait in words, then one as an HTTP date 3 s ahead; the third goes through.
    const asked = ["soon", () => new Date(Date.now() + 3000).toUTCString()];
    const sent: number[] = [];
    await page.route(`**/api/v1/runs/${id}`, async (route) => {
      if (route.request().method() !== "DELETE") return route.continue();
      sent.push(Date.now());
      const wait = asked[sent.length - 1];
      if (wait === undefined) return route.continue();
      return route.fulfill({ status: 503, headers: { "Retry-After": typeof wait === "string" ? wait : wait() }, body: "" });
    });
    await page.click("#delete-button");
    await row(page, id).waitFor({ state: "detached" });
    expect(sent).toHaveLength(3);
    // The date, at whole seconds, asked for 2 to 3 s (words, for none: 1 s).
    expect(sent[2] - sent[1]).toBeGreaterThanOrEqual(1900);
    expect((await fetch(`${BASE}/api/v1/runs/${id}`)).status).toBe(404);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    expect(problems.filter((p) => !p.includes("503"))).toEqual([]);
    await page.close();
  });

  it("a cancel whose answer is lost is sent again by the page, and the run, refused then as cancelled already, shows cancelled without a word", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "Cancelled once", { steps: 5, step_ms: 60_000 });
    await page.waitForSelector("#detail-status.running", { timeout: 20_000 });
    const { statuses: sent } = await meetFates(page, `**/api/v1/runs/${id}/cancel`, "POST", ["lost"]);
    // The page sends it again 1 s after the loss; the stream may show the cancel well before.
    const refused = page.waitForResponse((res) => res.request().method() === "POST" && res.status() === 400);
    await page.click("#cancel-button");
    await page.waitForSelector("#detail-status.cancelled", { timeout: 15_000 });
    await refused;
    // One more turn of the page's event loop: the answer has been handled.
    await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
    expect(sent).toEqual([200, 400]);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    expect(problems.filter((p) => !/ERR_CONNECTION_RESET|400/.test(p))).toEqual([]);
    await page.close();
  });

  it("a submit whose answer is lost on its way back is sent again by itself with the same idempotency key, and opens the one run it made", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const tag = `lost-${Date.now()}`;
    const { keys: sent } = await meetFates(page, "**/api/v1/runs", "POST", ["lost"]);
    await page.fill("#prompt", "Made once, answered once");
    await page.fill("input[name=tags]", tag);
    await page.click("#submit-form button[type=submit]");
    await page.waitForFunction(() => (document.getElementById("detail-id")?.textContent ?? "").startsWith("run_"));
    const made = await (await fetch(`${BASE}/api/v1/runs?tag=${tag}`)).json();
    expect(made.total).toBe(1);
    expect(await page.locator("#detail-id").innerText()).toBe(made.jobs[0].job_id);
    expect(sent).toHaveLength(2);
    expect(new Set(sent).size).toBe(1);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    expect(problems.filter((p) => !/ERR_CONNECTION_RESET/.test(p))).toEqual([]);
    await page.close();
  });

  it("a submit answered 503 while a deploy is under way, then with its answer lost twice, makes one run: it is sent again with the same idempotency key", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const tag = `once-${Date.now()}`;
    /** The idempotency key of each submit the page sent: a deploy's 503, an answer lost on its way back twice, then through. */
    const { keys: sent } = await meetFates(page, "**/api/v1/runs", "POST", ["503", "lost", "lost"]);
    await page.fill("#prompt", "Made once");
    await page.fill("input[name=tags]", tag);
    await page.click("#submit-form button[type=submit]");
    // Sent again after the 503's Retry-After, the run was made, and its answer never came, nor when
    // sent again once more: past its tries, the page says so.
    await page.waitForSelector("#notice:not([hidden])");
    expect(sent).toHaveLength(3);
    const made = await (await fetch(`${BASE}/api/v1/runs?tag=${tag}`)).json();
    expect(made.total).toBe(1);
    // Submitted again, as a user does, it is the same request: the API answers it with that run, which the page opens.
    await page.click("#submit-form button[type=submit]");
    await page.waitForFunction(() => (document.getElementById("detail-id")?.textContent ?? "").startsWith("run_"));
    expect(await page.locator("#detail-id").innerText()).toBe(made.jobs[0].job_id);
    expect(sent).toHaveLength(4);
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

  it("the feed and the run's stream, cut and then refused for seconds while a deploy is under way, come back after the last event each had", async () => {
    const gateway = await startDeployingProxy(BASE);
    const { page, problems } = await open(`${gateway.base}/`);
    const id = await submitRun(page, "Through a deploy", { steps: 6, step_ms: 1000 });
    await page.waitForSelector("#detail-status.running");
    // The deploy: every stream cut, and refused while it lasts; a run made meanwhile by another client.
    gateway.deploy();
    await page.waitForSelector("#feed-state.down");
    const meanwhile = await submitOverApi({ prompt: "made during the deploy", config: { simulate: { steps: 1, step_ms: 1 } } });
    await expect.poll(() => new Set(gateway.refused).size, { timeout: 15_000 }).toBe(2);
    gateway.done();

    // Both come back: the feed tells of the run made meanwhile, and the run shown is followed to its end.
    await row(page, meanwhile).waitFor({ timeout: 20_000 });
    await page.waitForSelector("#feed-state.live");
    await followedOnce(page, id);
    expect(problems.filter((p) => !/503|ERR_/.test(p))).toEqual([]);
    await page.close();
    await gateway.close();
  });

  it("a read whose answer never begins is taken for lost after 60 s and sent again; never answered, past the page's tries, the page says so, and still once the list is read again behind it", async () => {
    const [answered, unanswered] = await Promise.all(
      ["Read the second time", "Never read"].map((prompt) => submitOverApi({ prompt, config: { simulate: { steps: 1, step_ms: 1 } } })),
    );
    for (const id of [answered, unanswered]) await expect.poll(async () => (await (await fetch(`${BASE}/api/v1/runs/${id}`)).json()).status).toBe("succeeded");
    // The page's clock runs as any other, until the test moves it ahead.
    const { page, problems } = await open(`${BASE}/`, undefined, undefined, (opened) => opened.clock.install());
    /** The reads of each run the page sent, and those the link holds with no answer: the first of one run's, all of the other's. */
    const reads = new Map<string, number>();
    for (const id of [answered, unanswered]) {
      await page.route(`**/api/v1/runs/${id}`, (route) => {
        if (route.request().method() !== "GET") return route.continue();
        reads.set(id, (reads.get(id) ?? 0) + 1);
        if (id === answered && reads.get(id)! > 1) return route.continue();
      });
    }
    await row(page, answered).click();
    await expect.poll(() => reads.get(answered), { timeout: 10_000 }).toBe(1);
    await page.clock.fastForward(61_000);
    await page.waitForSelector("#detail-status.succeeded");
    expect(await page.locator("#detail-id").innerText()).toBe(answered);
    // Sent again (and read once more after its stream's result).
    expect(reads.get(answered)).toBeGreaterThanOrEqual(2);
    expect(await page.locator("#notice").isHidden()).toBe(true);

    await row(page, unanswered).click();
    for (let sent = 1; sent <= 3; sent++) {
      await expect.poll(() => reads.get(unanswered), { timeout: 10_000 }).toBe(sent);
      await page.clock.fastForward(61_000);
    }
    await expect.poll(() => page.locator("#notice").innerText(), { timeout: 10_000 }).toBe("No answer from the service within 60 s.");
    expect(reads.get(unanswered)).toBe(3);
    // The feed, silent past 45 s, is opened again and the list read again behind it (the feed told
    // nothing: the runs had ended before the page opened): what the click met stays said.
    const listedAgain = page.waitForResponse((res) => new URL(res.url()).pathname === "/api/v1/runs" && new URL(res.url()).searchParams.get("page_size") === "50");
    await page.clock.fastForward(46_000);
    const list = await listedAgain;
    expect(list.status()).toBe(200);
    await list.finished();
    // Time for the page to act on the list's answer.
    await page.waitForTimeout(500);
    expect(await page.locator("#notice").innerText()).toBe("No answer from the service within 60 s.");
    expect(problems).toEqual([]);
    await page.close();
  });

  it("a run picked, then another before the first was read: the first's refusal, come late, is not said over the second", async () => {
    const [first, second] = await Promise.all(["Picked first", "Picked second"].map((prompt) => submitOverApi({ prompt, config: { simulate: { steps: 1, step_ms: 1 } } })));
    const { page, problems } = await open(`${BASE}/`);
    // The first run's read is held, then refused as a deploy refuses it, with a wait the page does not wait out.
    const read = await holdRequests(page, `**/api/v1/runs/${first}`, () => true, {
      status: 503,
      contentType: "application/json",
      body: DEPLOYING_BODY,
      headers: { "Retry-After": "30" },
    });
    await row(page, first).click();
    await read.arrived;
    await row(page, second).click();
    await page.waitForSelector("#detail-status.succeeded");
    const refusedLate = page.waitForResponse((res) => res.url().endsWith(`/api/v1/runs/${first}`));
    read.release();
    expect((await refusedLate).status()).toBe(503);
    // Time for the page to act on the refusal, as it did before it left it unsaid.
    await page.waitForTimeout(500);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    expect(await page.locator("#detail-id").innerText()).toBe(second);
    // The browser logs the refused read: not a fault of the page.
    expect(problems.filter((p) => !p.includes("status of 503"))).toEqual([]);
    await page.close();
  });

  it("a run deleted, then another picked before the delete's reply came: the other stays shown, and the deleted one leaves the list", async () => {
    const [deleted, other] = await Promise.all(["Deleted", "Picked while the delete was on its way"].map((prompt) => submitOverApi({ prompt, config: { simulate: { steps: 1, step_ms: 1 } } })));
    const { page, problems } = await open(`${BASE}/`);
    // The delete reaches the service; its reply is held until the other run has been picked and shown.
    const deletion = await holdRequests(page, `**/api/v1/runs/${deleted}`, (request) => request.method() === "DELETE", "reply");
    await row(page, deleted).click();
    await page.waitForSelector("#detail-status.succeeded");
    await page.click("#delete-button");
    await deletion.arrived;
    await row(page, other).click();
    await page.waitForFunction((id) => document.getElementById("detail-id")?.textContent === id, other);
    await page.waitForSelector("#detail-status.succeeded");
    const reply = page.waitForResponse((res) => res.url().endsWith(`/api/v1/runs/${deleted}`) && res.request().method() === "DELETE");
    deletion.release();
    expect((await reply).status()).toBe(204);
    await row(page, deleted).waitFor({ state: "detached" });
    // Time for the page to act on the reply, as it did before it left the other run's panel alone.
    await page.waitForTimeout(500);
    expect(await page.locator("#detail-body").isVisible()).toBe(true);
    expect(await page.locator("#detail-id").innerText()).toBe(other);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("the feed, dropped while the browser is offline, is opened again as soon as the browser is back online, not after its wait", async () => {
    const link = await startProxy(BASE, {});
    const { page, problems } = await open(`${link.base}/`, undefined, undefined, (opened) => opened.clock.install());
    // Offline, and the feed's connection lost: the page tries it again, and fails, while offline.
    await page.context().setOffline(true);
    link.cut(EVENT_STREAMS);
    await page.waitForSelector("#feed-state.down");
    // The page's clock stops: a stream waiting out its wait to be opened again would wait for good.
    await page.clock.pauseAt(await page.evaluate(() => Date.now() + 10));
    const meanwhile = await submitOverApi({ prompt: "made while the browser was offline", config: { simulate: { steps: 1, step_ms: 1 } } });
    await page.context().setOffline(false);
    await row(page, meanwhile).waitFor({ timeout: 10_000 });
    await page.waitForSelector("#feed-state.live");
    // The cut connection, and any try while offline, logged by the browser: not a fault of the page.
    expect(problems.filter((p) => !/ERR_/.test(p))).toEqual([]);
    await page.close();
    await link.close();
  });

  it("the feed and the run's stream, silent past 45 s with their connections open (they died unheard), or with no answer begun, are opened again after the last event each had", async () => {
    // How many more of the page's streams the link holds with no answer at all.
    let holding = 0;
    const link = await startProxy(BASE, { answer: (_method, path) => (holding > 0 && EVENT_STREAMS.test(path) ? (holding--, "hold") : undefined) });
    // Each stream the page opens; and the page's clock runs as any other, until the test moves it ahead.
    const streams: string[] = [];
    const { page, problems } = await open(`${link.base}/`, undefined, undefined, (opened) => {
      opened.on("request", (request) => EVENT_STREAMS.test(new URL(request.url()).pathname) && streams.push(new URL(request.url()).pathname));
      return opened.clock.install();
    });
    const id = await submitRun(page, "Through a silent link", { steps: 8, step_ms: 1000 });
    await page.waitForSelector("#detail-status.running");
    // A stream heard from within 45 s is kept, however long it has been open.
    const progressShown = () => page.locator("#detail-log li", { hasText: /^progress/i }).count();
    for (let i = 0; i < 2; i++) {
      await page.clock.fastForward(30_000);
      const shown = await progressShown();
      await expect.poll(progressShown, { timeout: 10_000 }).toBeGreaterThan(shown);
    }
    expect(streams).toHaveLength(2);
    // Nothing more comes of either connection, and neither side is told: a run made meanwhile by
    // another client is not heard of, and the page, for which a quiet stream may be a live one, waits.
    link.stall(EVENT_STREAMS);
    const meanwhile = await submitOverApi({ prompt: "made while the link was silent", config: { simulate: { steps: 1, step_ms: 1 } } });
    await new Promise((passed) => setTimeout(passed, 2000));
    expect(await row(page, meanwhile).count()).toBe(0);
    expect(await page.locator("#feed-state").getAttribute("class")).toBe("pill live");

    // 45 s without a word, not even a heartbeat: both are taken for dead, and opened again, and
    // each new connection is held by the link with no answer begun.
    holding = 2;
    await page.clock.fastForward(46_000);
    await expect.poll(() => streams.length, { timeout: 10_000 }).toBe(4);
    await page.waitForSelector("#feed-state.down");
    // 45 s more without an answer: both are given up again, and opened once more.
    await page.clock.fastForward(46_000);
    await row(page, meanwhile).waitFor({ timeout: 20_000 });
    await page.waitForSelector("#feed-state.live");
    await followedOnce(page, id);
    const feeds = streams.filter((path) => path.endsWith("/events"));
    expect(feeds).toHaveLength(3);
    expect(streams.filter((path) => path.endsWith(`${id}/stream`))).toHaveLength(3);
    expect(problems).toEqual([]);
    await page.close();
    await link.close();
  });
});

/**
 * Waits until the page shows run `id` succeeded, with its output, and its log holds the run's
 * progress as its stream tells it, each once: the stream came back after the last event it had.
 */
async function followedOnce(page: Page, id: string): Promise<void> {
  await page.waitForSelector("#detail-status.succeeded", { timeout: 30_000 });
  const output = await (await fetch(`${BASE}/api/v1/runs/${id}/output`)).text();
  await expect.poll(() => page.locator("#detail-output").textContent()).toBe(output);
  const told = (await (await fetch(`${BASE}/api/v1/runs/${id}/stream?format=named`)).text())
    .split("\n\n")
    .filter((block) => block.includes("event: progress"))
    .map((block) => JSON.parse(block.slice(block.indexOf("data: ") + 6)) as { percentage: number; current_step: string | null })
    .map(({ percentage, current_step }) => `${percentage}%${current_step ? ` · ${current_step}` : ""}`);
  const log = await page.locator("#detail-log li").allInnerTexts();
  const progress = log.filter((line) => /^PROGRESS/i.test(line)).map((line) => line.replace(/^PROGRESS\s*/i, ""));
  expect(progress).toEqual(told);
  expect(log.some((line) => /stream\s*closed/i.test(line))).toBe(false);
}
