/**
 * The reference frontend's list of runs in a real headless Chromium, against `wrangler dev` in local
 * development (no keys): filtered live by status and tag, read a page at a time, a run picked from
 * the keyboard, and answers that come back after the filter changed. (A run's own view: runs.test.ts.)
 */
import { describe, expect, it } from "vitest";
import { BASE } from "../server";
import { SHOTS, filterByTag, holdRequests, listedIds, open, row, submitOverApi, submitRun, withServerAndChromium } from "./page";

withServerAndChromium();

describe("the reference frontend's list: filtered, paged, and kept in step with the feed", () => {
  it("a list asked for again before the last one was answered shows the later one, whichever answer comes last", async () => {
    const shown = await submitOverApi({ prompt: "Listed by the later list", config: { simulate: { steps: 1, step_ms: 1 } } });
    const { page, problems } = await open(`${BASE}/`);
    // The list of failed runs is held until the list that followed it has been shown.
    const failedList = await holdRequests(page, "**/api/v1/runs?*", (request) => {
      const asked = new URL(request.url()).searchParams;
      return asked.get("status") === "failed" && asked.get("page_size") !== "1";
    });
    const failedListed = page.waitForResponse((res) => res.url().includes("status=failed") && res.url().includes("page_size=50"));
    await page.selectOption("#filter-form select[name=status]", "failed");
    await failedList.arrived;
    await page.selectOption("#filter-form select[name=status]", "");
    await row(page, shown).waitFor();
    failedList.release();
    await failedListed;
    // One more turn of the page's event loop: the held list's answer has been handled.
    await page.evaluate(() => new Promise((done) => setTimeout(done, 0)));
    expect(await row(page, shown).isVisible()).toBe(true);
    expect(await page.locator("#notice").isHidden()).toBe(true);
    expect(problems).toEqual([]);
    await page.close();
  });

  it("filters the list by status and tag, live", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const tag = `f${Date.now()}`;
    const tagged = await submitRun(page, "Tagged", { steps: 1, step_ms: 50 }, tag);
    const untagged = await submitRun(page, "Untagged", { steps: 1, step_ms: 50 });
    await filterByTag(page, tag);
    await expect.poll(() => listedIds(page)).toEqual([tagged]);
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

  it("a run is picked from the keyboard, and its entry keeps the focus while the feed draws the list anew", async () => {
    const target = await submitOverApi({ prompt: "Picked from the keyboard", config: { simulate: { steps: 1, step_ms: 1 } } });
    const { page, problems } = await open(`${BASE}/`);
    await row(page, target).waitFor();
    // Tabbing through the page reaches the run's entry, its id.
    const entry = row(page, target).locator("button.id");
    const focused = () => entry.evaluate((button) => button === document.activeElement);
    for (let tabs = 0; tabs < 60 && !(await focused()); tabs++) await page.keyboard.press("Tab");
    expect(await focused()).toBe(true);
    await page.keyboard.press("Enter");
    await page.waitForFunction((id) => document.getElementById("detail-id")?.textContent === id, target);
    expect(await entry.getAttribute("aria-current")).toBe("true");
    // A run elsewhere changes meanwhile, step by step: the feed draws the list anew each time, and
    // the focus stays where it was.
    const busy = await submitOverApi({ prompt: "Changing meanwhile", config: { simulate: { steps: 3, step_ms: 300 } } });
    await expect.poll(() => row(page, busy).getAttribute("data-status"), { timeout: 15_000 }).toBe("succeeded");
    expect(await page.evaluate(() => document.activeElement?.closest("li")?.dataset.id)).toBe(target);
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
    const shown = async () => (await listedIds(page)).sort();
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

  it("the total read again when the feed tells of a run on a page not shown, answered after the filter changed, is dropped", async () => {
    const tag = `t${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 52; i++) ids.push(await submitOverApi({ prompt: `total ${i}`, tags: [tag], delay_seconds: 3600 }));
    const { page, problems } = await open(`${BASE}/`);
    // The list's total read by itself (a page of one run) is held until the filter has been changed.
    const readsTotal = (url: string) => new URL(url).pathname === "/api/v1/runs" && new URL(url).searchParams.get("page_size") === "1";
    const totalRead = await holdRequests(page, "**/api/v1/runs?*", (request) => readsTotal(request.url()));
    await filterByTag(page, tag);
    const totalShown = () => page.locator("#runs-total").innerText();
    await expect.poll(totalShown).toBe("(52)");
    // The oldest run, on the page not shown, cancelled: the page reads the total again.
    expect((await fetch(`${BASE}/api/v1/runs/${ids[0]}/cancel`, { method: "POST" })).status).toBe(200);
    await totalRead.arrived;
    await page.selectOption("#filter-form select[name=status]", "cancelled");
    await row(page, ids[0]).waitFor();
    await expect.poll(totalShown).toBe("(1)");
    const late = page.waitForResponse((res) => readsTotal(res.url()));
    totalRead.release();
    await (await late).finished();
    // Time for the page to act on the late answer, as it did before it dropped it.
    await page.waitForTimeout(500);
    expect(await totalShown()).toBe("(1)");
    expect(problems).toEqual([]);
    await page.close();
  });
});
