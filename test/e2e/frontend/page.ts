/**
 * What the tests of the reference frontend share: a `wrangler dev` and Debian's Chromium for a
 * file's tests, pages that collect every problem the browser reports, and the gestures a user
 * makes on the page (submit a run, filter the list, answer a run that asks).
 */
import { mkdirSync } from "node:fs";
import type { Browser, Page, Request, Route } from "playwright-core";
import { afterAll, beforeAll, expect } from "vitest";
import { launchChromium } from "../browser";
import { DEPLOYING_BODY } from "../proxy";
import { BASE, startServer, stopServer, type DevServer } from "../server";

/** Where the tests keep their screenshots. */
export const SHOTS = "test-results/frontend";

let browser: Browser;

/**
 * Before the calling file's tests, starts `wrangler dev` of the service (with startServer's
 * arguments) and Chromium; after them, closes both.
 */
export function withServerAndChromium(...server: Parameters<typeof startServer>): void {
  let dev: DevServer | undefined;
  beforeAll(async () => {
    mkdirSync(SHOTS, { recursive: true });
    [dev, browser] = await Promise.all([startServer(...server), launchChromium()]);
  });
  afterAll(async () => {
    await browser?.close();
    if (dev) await stopServer(dev);
  });
}

/** A blank page, for a test that watches the browser its own way. */
export const newPage = (): Promise<Page> => browser.newPage();

/**
 * A page with every console error, page error and failed request collected, once `ready` shows (by
 * default, the feed is live); `prepare` is done to the page before it loads.
 */
export async function open(
  url: string,
  viewport = { width: 1400, height: 900 },
  ready = "#feed-state.live",
  prepare?: (page: Page) => Promise<void>,
): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage({ viewport });
  await prepare?.(page);
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
export async function filterByTag(page: Page, tag: string): Promise<void> {
  const field = page.locator("#filter-form input[name=tag]");
  await field.fill(tag);
  await field.blur();
}

/** Fills the form and submits a simulated run; answers its id once the page shows it. */
export async function submitRun(page: Page, prompt: string, knobs: Record<string, number>, tags = ""): Promise<string> {
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

/** The run's entry in the page's list. */
export const row = (page: Page, id: string) => page.locator(`#run-list li[data-id="${id}"]`);

/** The ids of the runs the page lists, in its order. */
export const listedIds = (page: Page): Promise<string[]> => page.locator("#run-list li").evaluateAll((items) => items.map((li) => (li as HTMLElement).dataset.id!));

/** Answers the run the page shows from its input panel, once the run asks. */
export async function answerWhenAsked(page: Page, action: "approve" | "revise" | "reject", text: string): Promise<void> {
  await page.waitForSelector("#input-panel:not([hidden])", { timeout: 15_000 });
  await page.fill("#input-text", text);
  await page.click(`[data-answer=${action}]`);
}

/** Submits a run over the API of the server on 8005, as another client of the tenant would; answers its id. */
export async function submitOverApi(body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${BASE}/api/v1/runs`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return ((await res.json()) as { job_id: string }).job_id;
}

/** What becomes of a request on its way: a deploy's 503, or its answer lost on the way back (the request itself carried out). */
export type Fate = "503" | "lost";

/**
 * Has the page's `method` requests to `url` meet `fates` in turn, the first request the first fate,
 * and those past them go through; answers the idempotency keys they were sent with, as they are
 * sent, and the status of each answer, as it comes (a lost one's: what the service answered).
 */
export async function meetFates(page: Page, url: string, method: string, fates: Fate[]): Promise<{ keys: string[]; statuses: number[] }> {
  const keys: string[] = [];
  const statuses: number[] = [];
  await page.route(url, async (route) => {
    if (route.request().method() !== method) return route.continue();
    keys.push(route.request().headers()["idempotency-key"]);
    const fate = fates[keys.length - 1];
    if (fate === "503") {
      statuses.push(503);
      return route.fulfill({ status: 503, headers: { "Retry-After": "1", "Content-Type": "application/json" }, body: DEPLOYING_BODY });
    }
    const answer = await route.fetch();
    statuses.push(answer.status());
    return fate === "lost" ? route.abort("connectionreset") : route.fulfill({ response: answer });
  });
  return { keys, statuses };
}

/**
 * What a held request meets once released: sent on then ("request"); sent on at once, its reply
 * handed to the page then ("reply": the service has done what it asks, and the page does not know
 * yet); or this answer, as a gateway in between would give it, and nothing sent on.
 */
export type Held = "request" | "reply" | Parameters<Route["fulfill"]>[0];

/** Requests held by `holdRequests`: `arrived` settles once the first is held; `release()` lets them go on. */
export interface Holding {
  arrived: Promise<void>;
  release(): void;
}

/**
 * Holds the page's requests to `url` that `picked` picks until `release()`, each then meeting
 * `then`; every other request goes through.
 */
export async function holdRequests(
  page: Page,
  url: string | ((url: URL) => boolean),
  picked: (request: Request) => boolean | Promise<boolean>,
  then: Held = "request",
): Promise<Holding> {
  let release = () => {};
  const released = new Promise<void>((go) => (release = go));
  let arrive = () => {};
  const arrived = new Promise<void>((came) => (arrive = came));
  await page.route(url, async (route) => {
    if (!(await picked(route.request()))) return route.continue();
    const reply = then === "reply" ? await route.fetch() : undefined;
    arrive();
    await released;
    if (then === "reply") return route.fulfill({ response: reply });
    return then === "request" ? route.continue() : route.fulfill(then);
  });
  return { arrived, release };
}

/**
 * Holds the page's first request for run `id` that `held` picks (by its path, and its place among
 * the page's requests to that path, from 1) until the service has deleted the run: then hands it on,
 * and waits for its answer, before the page has the delete's answer, as a slow link may. `held`
 * settles once it is held; `givenUp` once the delete was answered, with whether the page had given
 * the held request up by then (false: it went on to the service, and its answer reached the page).
 */
export function holdUntilDeleted(page: Page, id: string, held: (path: string, nth: number) => boolean): { held: Promise<void>; givenUp: Promise<boolean> } {
  const sent = new Map<string, number>();
  let holding = () => {};
  let deleted = () => {};
  const isHeld = new Promise<void>((done) => (holding = done));
  const isDeleted = new Promise<void>((done) => (deleted = done));
  let givenUp: Promise<boolean> | undefined;
  void page.route(`**/api/v1/runs/${id}**`, async (route) => {
    const request = route.request();
    const path = new URL(request.url()).pathname;
    if (request.method() === "DELETE") {
      const answer = await route.fetch();
      deleted();
      await givenUp;
      return route.fulfill({ response: answer });
    }
    const nth = (sent.get(path) ?? 0) + 1;
    sent.set(path, nth);
    if (givenUp || !held(path, nth)) return route.continue();
    givenUp = isDeleted.then(async () => {
      try {
        await route.continue();
      } catch {
        return true;
      }
      return (await request.response()) === null;
    });
    holding();
  });
  return { held: isHeld, givenUp: isDeleted.then(() => givenUp!) };
}
