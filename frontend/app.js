// @ts-check
/**
 * The reference frontend: submit a run, watch the tenant's runs live from its feed, watch one
 * run's stream, read its output, answer it, cancel it, retry it from where it stopped, delete
 * it. It talks to the API as any browser client would: with no credential in local development,
 * else with a scoped token (pasted, or passed as #token=... in the address, which is then taken
 * out of it), offering only what the token allows: without `stream` it reads the runs again now
 * and then instead of watching them, and without `read` it only starts them. No build step: the
 * browser loads its modules as they are. This one wires the page's controls to them.
 */
import { loadGrant } from "./grant.js";
import { $, notice } from "./page.js";
import { token, useToken } from "./requests.js";
import { downloadOutput } from "./output.js";
import { answer, cancelSelected, deleteSelected, hear, labelRetry, select, unselect } from "./run.js";
import { connectFeed, connectPanel, loadMore, loadRuns, refilter, renderRuns } from "./runs.js";
import { retrySelected, submit } from "./start.js";

/**
 * With what the token allows known, the runs it reaches: the list and the feed, or its runs one by
 * one. Begun again for another token before the first was known, the later stands.
 */
async function begin() {
  if (!(await loadGrant())) return;
  connectFeed();
  await loadRuns();
}

function start() {
  connectPanel({ picked: (id) => void select(id), told: hear });
  $("submit-form").addEventListener("submit", (e) => void submit(/** @type {SubmitEvent} */ (e)));
  $("filter-form").addEventListener("change", refilter);
  $("filter-form").addEventListener("submit", (e) => e.preventDefault());
  $("runs-more").addEventListener("click", () => void loadMore());
  $("cancel-button").addEventListener("click", () => void cancelSelected());
  $("retry-button").addEventListener("click", () => void retrySelected());
  $("retry-from").addEventListener("change", labelRetry);
  $("retry-of-link").addEventListener("click", (e) => {
    e.preventDefault();
    const id = $("retry-of-link").textContent;
    if (id) void select(id);
  });
  $("delete-button").addEventListener("click", () => void deleteSelected());
  $("output-download").addEventListener("click", () => void downloadOutput());
  for (const button of document.querySelectorAll("[data-answer]")) {
    button.addEventListener("click", () => void answer(/** @type {HTMLElement} */ (button).dataset.answer ?? ""));
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useToken(/** @type {HTMLInputElement} */ ($("token")).value.trim() || null);
    notice(null);
    $("started").hidden = true;
    // The run watched may be out of the new token's reach.
    unselect();
    void begin();
  });
  if (token) $("token-form").hidden = false;
  void begin();
  // "3s ago" ages.
  setInterval(renderRuns, 15_000);
}

start();
