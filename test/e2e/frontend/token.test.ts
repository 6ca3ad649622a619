/**
 * The reference frontend in Chromium against `wrangler dev` in a deployment's shape (API keys and
 * TOKEN_SECRET), with a scoped token: the page offers what the token allows and reaches what it
 * reaches, and says when it is refused or expires.
 */
import type { Page } from "playwright-core";
import { describe, expect, it } from "vitest";
import { mintToken } from "../../../src/tokens";
import { KEYED, TOKEN_SECRET, backendRun, forceDelete, longRun, mint, withKey, withKeyedServerAndChromium } from "./keyed";
import { SHOTS, listedIds, newPage, open, row, submitRun } from "./page";

withKeyedServerAndChromium();

/** Waits until the page says how many runs its token may start: it reads that again after each it starts. */
async function submitsLeftSaid(page: Page, text: string): Promise<void> {
  await page.waitForFunction((said) => document.getElementById("submits-left")?.textContent === said, text);
}

describe("the reference frontend in a deployment, with a scoped token", () => {
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
    expect((await listedIds(page)).sort()).toEqual([watched, other].sort());
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
    const other = await backendRun("readers", { steps: 1, step_ms: 1 });
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
    // The feed came back and was refused: the API's 401, not a fault of the page.
    expect(problems.filter((problem) => !problem.includes("401"))).toEqual([]);
    await page.close();
    await forceDelete(id);
  });

  it("without a credential, or with an expired token, is refused and asks for a token", async () => {
    const bare = await newPage();
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
    const page = await newPage();
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
