/**
 * The reference frontend in Chromium against `wrangler dev` in local development: a run that asks
 * for a person answered from the page (also when a reply is lost), and a failed or cancelled run
 * retried from a step.
 */
import { describe, expect, it } from "vitest";
import { BASE } from "../server";
import { SHOTS, answerWhenAsked, holdRequests, meetFates, open, row, submitOverApi, submitRun, withServerAndChromium } from "./page";

withServerAndChromium();

describe("the reference frontend in local development: a person's answers, and retries", () => {
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

  it("an answer whose reply is lost, sent again by the page and then given again by the person, is given once: the page shows the run going on, not a refusal", async () => {
    const { page, problems } = await open(`${BASE}/`);
    const id = await submitRun(page, "Ask, then lose the reply", { steps: 2, step_ms: 100, input_at_step: 1 });
    await page.waitForSelector("#input-panel:not([hidden])", { timeout: 15_000 });
    const { keys: sent } = await meetFates(page, `**/api/v1/runs/${id}/input`, "POST", ["lost", "lost", "lost"]);
    await page.fill("#input-text", "Shorter, please");
    await page.click("[data-answer=revise]");
    // Its reply lost, and again each time the page sent it again (twice): past its tries, the page says so.
    await page.waitForSelector("#notice:not([hidden])");
    expect(sent).toHaveLength(3);
    // Given again, as a person does: the same answer, answered with the run; the step runs again once and asks again.
    await page.click("[data-answer=revise]");
    await expect.poll(() => sent.length).toBe(4);
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

  it("an answer whose reply comes after another run was picked: the run picked stays shown", async () => {
    // Running for good: nothing it tells shows it again in the panel, once the panel shows another run.
    const other = await submitOverApi({ prompt: "Picked while the reply was on its way", config: { simulate: { steps: 2, step_ms: 600_000 } } });
    const { page, problems } = await open(`${BASE}/`);
    const asking = await submitRun(page, "Ask, then look elsewhere", { steps: 2, step_ms: 100, input_at_step: 1 });
    // The answer reaches the service; its reply is held until another run has been picked and shown.
    const answer = await holdRequests(page, `**/api/v1/runs/${asking}/input`, () => true, "reply");
    await answerWhenAsked(page, "approve", "");
    await answer.arrived;
    await row(page, other).click();
    await page.waitForFunction((id) => document.getElementById("detail-id")?.textContent === id, other);
    await page.waitForSelector("#detail-status.running");
    const reply = page.waitForResponse((res) => res.url().endsWith(`/api/v1/runs/${asking}/input`));
    answer.release();
    expect((await reply).ok()).toBe(true);
    // Time for the page to act on the reply, as it did before it left another run's panel alone.
    await page.waitForTimeout(500);
    expect(await page.locator("#detail-id").innerText()).toBe(other);
    expect(await page.locator("#detail-status").innerText()).toBe("running");
    expect(await page.locator("#input-panel").isHidden()).toBe(true);
    // The answered run goes on to its end.
    await expect.poll(async () => (await (await fetch(`${BASE}/api/v1/runs/${asking}`)).json()).status, { timeout: 15_000 }).toBe("succeeded");
    expect(problems).toEqual([]);
    await page.close();
    expect((await fetch(`${BASE}/api/v1/runs/${other}?force=true`, { method: "DELETE" })).status).toBe(204);
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
});
