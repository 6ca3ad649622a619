/**
 * The reference frontend in Chromium, with a scoped token, when another token is pasted over it
 * while a request made with the first is under way: what the first token's request read, or its
 * reply, comes late to a page that now shows the later token's runs, and is not taken for them.
 */
import type { Page, Request as PageRequest, Response as PageResponse } from "playwright-core";
import { describe, expect, it } from "vitest";
import { KEYED, backendRun, forceDelete, longRun, mint, withKey, withKeyedServerAndChromium } from "./keyed";
import { holdRequests, listedIds, open, row, type Held, type Holding } from "./page";

withKeyedServerAndChromium();

/**
 * Pastes `pasted` over the token in use while the page's request that `held` holds waits; once the
 * page has shaped itself to the pasted token (`shaped`), lets the held request go on. Answers its
 * answer, come whole to the page: the earlier token's answer, come late.
 */
async function pasteOverHeld(
  page: Page,
  held: Holding,
  isHeld: (request: PageRequest) => boolean | Promise<boolean>,
  pasted: string,
  shaped: () => Promise<unknown>,
): Promise<PageResponse> {
  await held.arrived;
  await page.fill("#token", pasted);
  await page.click("#token-form button");
  await shaped();
  const answered = page.waitForResponse((response) => isHeld(response.request()));
  held.release();
  const answer = await answered;
  // A bodiless answer (a delete's 204) is whole when it comes; through a route, the browser then
  // reports its request failed, and never finished.
  if (answer.status() !== 204) await answer.finished();
  return answer;
}

describe("the reference frontend, with a token pasted over another while its requests are under way", () => {
  it("another token put in use while the last one's reads are under way: what those read, come late, is not shown", async () => {
    const mine = await longRun("put-in-use-later");
    const theirs = await longRun("put-in-use-first");
    const later = await mint({ scopes: ["read"], runs: [mine] });
    // The first token, and which of its reads is held until the later token's runs are shown: what
    // it may do, the run it reaches, the tenant's list.
    const first = [
      { token: await mint({ scopes: ["read"], runs: [theirs] }), held: /^\/api\/v1\/tokens\/verify$/ },
      { token: await mint({ scopes: ["read"], runs: [theirs] }), held: new RegExp(`^/api/v1/runs/${theirs}$`) },
      { token: await mint({ scopes: ["read", "stream"], session_id: "put-in-use-first" }), held: /^\/api\/v1\/runs$/ },
    ];
    for (const { token, held } of first) {
      const isHeld = async (request: PageRequest) => (await request.headerValue("authorization")) === `Bearer ${token}` && held.test(new URL(request.url()).pathname);
      let read: Holding | undefined;
      const { page, problems } = await open(`${KEYED}/#token=${token}`, undefined, "#token-form:not([hidden])", async (page) => {
        read = await holdRequests(page, (url) => url.pathname.startsWith("/api/"), isHeld);
      });
      await pasteOverHeld(page, read!, isHeld, later, () => row(page, mine).waitFor());
      // Time for the page to act on the late answer, as it did before it dropped such answers.
      await page.waitForTimeout(1000);
      expect(await listedIds(page), `held: ${held}`).toEqual([mine]);
      expect(await page.locator("#filter-form").isHidden()).toBe(true);
      expect(problems).toEqual([]);
      await page.close();
    }
    await forceDelete(mine, theirs);
  });

  it("another token put in use while a submit is under way: the run made is named as the earlier token's, and not read with the later one", async () => {
    const mine = await longRun("submitted-over-later");
    const earlier = await mint({ scopes: ["read", "stream", "submit"], session_id: "submitted-over-first", max_submits: 1 });
    const later = await mint({ scopes: ["read", "stream"], session_id: "submitted-over-later" });
    const isSubmit = (request: PageRequest) => request.method() === "POST" && new URL(request.url()).pathname === "/api/v1/runs";
    let reply: Holding | undefined;
    const { page, problems } = await open(`${KEYED}/#token=${earlier}`, undefined, "#feed-state.live", async (page) => {
      // The service makes the run; its answer reaches the page only once the later token is in use.
      reply = await holdRequests(page, (url) => url.pathname === "/api/v1/runs", isSubmit, "reply");
    });
    const runReads: string[] = [];
    page.on("request", (request) => {
      if (request.method() === "GET" && /^\/api\/v1\/runs\/run_\w+$/.test(new URL(request.url()).pathname)) runReads.push(new URL(request.url()).pathname);
    });
    await page.fill("#prompt", "started as the token changes");
    await page.click("#submit-form button[type=submit]");
    expect((await pasteOverHeld(page, reply!, isSubmit, later, () => row(page, mine).waitFor())).status()).toBe(202);
    // The later token may not start runs, so its page has no form: the notice says what became of the submit.
    await page.waitForSelector("#notice:not([hidden])");
    const started = /^Started (run_\w+) with the token in use before this one\.$/.exec(await page.locator("#notice").innerText());
    expect(started).not.toBeNull();
    const made = await (await withKey(`/api/v1/runs/${started![1]}`)).json();
    expect(made.session_id).toBe("submitted-over-first");
    // The later token was not sent for the run it does not reach.
    expect(runReads).not.toContain(`/api/v1/runs/${started![1]}`);
    expect(await page.locator("#detail-body").isHidden()).toBe(true);
    expect(await listedIds(page)).toEqual([mine]);
    expect(problems).toEqual([]);
    await page.close();
    await forceDelete(mine, started![1]);
  });

  it("another token put in use while a cancel, an answer, a delete or a download is under way: its reply takes back no notice of the later token's, and its refusal is not said", async () => {
    const theirs = await longRun("acted-over-later");
    const later = await mint({ scopes: ["read", "stream"], session_id: "acted-over-later" });
    const deploying: Held = { status: 503, headers: { "Retry-After": "30", "Content-Type": "application/json" }, body: JSON.stringify({ detail: "Service is being updated; retry shortly" }) };
    /** A run of the earlier token's, submitted with the key, that runs with these simulated knobs. */
    const submitted = (simulate: Record<string, number>) => backendRun("acted-over", simulate, "acted on");
    /**
     * A run of the earlier token's to act on, shown once it can be: a cancel of one running, an
     * approval of one awaiting input, a delete of one finished, a download of one whose output is
     * over a MiB.
     */
    const acts = {
      cancel: { run: () => longRun("acted-over"), ready: "#detail-status.running", button: "#cancel-button", method: "POST", path: (id: string) => `/api/v1/runs/${id}/cancel` },
      answer: {
        run: () => submitted({ steps: 2, step_ms: 1, input_at_step: 1 }),
        ready: "#input-panel:not([hidden])",
        button: "[data-answer=approve]",
        method: "POST",
        path: (id: string) => `/api/v1/runs/${id}/input`,
      },
      delete: { run: () => submitted({ steps: 1, step_ms: 1 }), ready: "#detail-status.succeeded", button: "#delete-button", method: "DELETE", path: (id: string) => `/api/v1/runs/${id}` },
      download: {
        run: () => submitted({ steps: 2, step_ms: 1, output_bytes: 1_500_000 }),
        ready: "#output-cut:not([hidden])",
        button: "#output-download",
        method: "GET",
        path: (id: string) => `/api/v1/runs/${id}/output`,
      },
    };
    const cases: { act: keyof typeof acts; pasted: string; shown: string | null; then: Held; notice: string | null }[] = [
      // The run is cancelled (answered, deleted); the reply comes once a token the service refuses was pasted, and its refusal stays said.
      { act: "cancel", pasted: "ert_not-a-token", shown: null, then: "reply", notice: "Unauthorized" },
      { act: "answer", pasted: "ert_not-a-token", shown: null, then: "reply", notice: "Unauthorized" },
      { act: "delete", pasted: "ert_not-a-token", shown: null, then: "reply", notice: "Unauthorized" },
      // A deploy's 503 comes once a good token was pasted, whose page says nothing of it.
      { act: "cancel", pasted: later, shown: theirs, then: deploying, notice: null },
      { act: "answer", pasted: later, shown: theirs, then: deploying, notice: null },
      { act: "delete", pasted: later, shown: theirs, then: deploying, notice: null },
      { act: "download", pasted: later, shown: theirs, then: deploying, notice: null },
    ];
    for (const { act, pasted, shown, then, notice } of cases) {
      const { run, ready, button, method, path } = acts[act];
      const mine = await run();
      const earlier = await mint({ scopes: ["read", "stream", "cancel", "input", "delete"], session_id: "acted-over" });
      const { page, problems } = await open(`${KEYED}/#token=${earlier}`);
      await row(page, mine).click();
      await page.waitForSelector(ready, { timeout: 15_000 });
      // The download is the one read of the output without a Range: the panel reads its first MiB with one.
      const isHeld = (request: PageRequest) => request.method() === method && new URL(request.url()).pathname === path(mine) && !request.headers().range;
      const held = await holdRequests(page, (url) => url.pathname === path(mine), isHeld, then);
      await page.click(button);
      await pasteOverHeld(page, held, isHeld, pasted, async () => {
        if (shown) return row(page, shown).waitFor();
        // The token refused, and its feed given up on, so that nothing says the refusal again behind the reply.
        await page.waitForFunction((said) => document.getElementById("notice")?.textContent === said, notice);
        await page.waitForFunction(() => document.getElementById("feed-state")?.textContent === "offline");
      });
      // Time for the page to act on the late answer, as it did before it dropped such answers.
      await page.waitForTimeout(1000);
      const said = (await page.locator("#notice").isHidden()) ? null : await page.locator("#notice").innerText();
      expect(said, `${act}: ${JSON.stringify(then)}`).toBe(notice);
      expect(await page.locator("#detail-body").isHidden()).toBe(true);
      // What the browser logs is the refusals, the refused token's 401s and the deploy's 503, not faults of the page.
      expect(problems.filter((problem) => !/status of (401|503)/.test(problem))).toEqual([]);
      await page.close();
      await forceDelete(mine);
    }
    await forceDelete(theirs);
  });
});
