// @ts-check
/** One run: its stream (or, for a token without `stream`, a reading every few seconds), answer, cancel and delete; its output is ./output.js's. */
import { lastingEvents, reopenUnless } from "./events.js";
import { can } from "./grant.js";
import { $, el, fillBar, lasting, notice, refused } from "./page.js";
import { ApiError, api, keptKey, tokenKept } from "./requests.js";
import { answered, latest, pick, requestKey, runs, selected, shown, showing, UNFINISHED } from "./known.js";
import { showOutput, showText } from "./output.js";
import { feed, forget, renderRuns } from "./runs.js";

/** @typedef {import("./requests.js").Job} Job */
/** @typedef {import("./requests.js").InputRequest} InputRequest */

/** The jobs a retry takes: it makes a new one that starts at the first unfinished step. */
const RETRYABLE = new Set(["failed", "cancelled"]);
/** Why Delete waits: the API deletes only a finished job (PraisonAI's Delete Run page: cancel first). */
const DELETE_RULE = /** @type {Record<string, string>} */ ({
  queued: "A queued job must be cancelled first.",
  running: "A running job must be cancelled first.",
  awaiting_input: "A job awaiting input must be cancelled first.",
});
/** How often the run shown is read again for a token without `stream`, which may not watch it. */
const RUN_EVERY_MS = 2_000;

/** How many statuses the streams of runs shown have told: a reply that was on its way meanwhile is older than the last of them. */
let statusesTold = 0;
/** What keeps the run shown up to date: its stream, or for a token without `stream` a reading every few seconds. */
/** @type {{ close(): void } | null} */
let watch = null;

export function unselect() {
  watch?.close();
  watch = null;
  pick(null);
  $("detail-body").hidden = true;
  $("detail-empty").hidden = false;
  renderRuns();
}

function log(/** @type {string} */ kind, /** @type {string} */ text) {
  const item = el("li");
  item.append(el("span", "kind", kind), document.createTextNode(text));
  const list = $("detail-log");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

export async function select(/** @type {string} */ id) {
  watch?.close();
  watch = null;
  pick(id);
  renderRuns();
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  // One column (a phone): the run is below the list, out of sight.
  if (matchMedia("(max-width: 1000px)").matches) $("detail").scrollIntoView({ block: "start" });
  $("detail-log").replaceChildren();
  showText("");
  /** @type {Job} */
  let job;
  try {
    job = await (await api(`/api/v1/runs/${id}`)).json();
  } catch (error) {
    // Said only while the run is the one picked: another picked meanwhile is shown without it.
    if (selected === id) refused(error);
    return;
  }
  if (selected !== id) return;
  renderDetail(job);
  if (can("stream")) watchStream(id);
  else watchByReading(job);
}

/**
 * The named stream: what happened so far, then live, ending with the result. Cut, it comes back
 * after the last event it had; refused (a deploy under way, say), it is opened again after it.
 */
function watchStream(/** @type {string} */ id) {
  const reading = new AbortController();
  const { signal } = reading;
  const data = (/** @type {MessageEvent} */ event) => JSON.parse(event.data);
  // The run's text step by step: a step's `first` text starts it anew (a broken attempt run again, an answer revised).
  const steps = /** @type {string[]} */ ([]);
  const stream = lastingEvents(
    `/api/v1/runs/${id}/stream`,
    new URLSearchParams({ format: "named" }),
    {
      status: (e) => {
        const { status } = data(e);
        statusesTold += 1;
        log("status", status.replace("_", " "));
        // An end is shown from the run read once its result comes: with its error and progress.
        if (UNFINISHED.has(status) && shown?.job_id === id) renderDetail({ ...shown, status });
      },
      progress: (e) => {
        const { percentage, current_step } = data(e);
        fillBar($("detail-progress"), percentage);
        log("progress", `${percentage}%${current_step ? ` · ${current_step}` : ""}`);
      },
      log: (e) => log("log", data(e).message),
      output: (e) => {
        const { delta, step = 0, first = false } = data(e);
        steps[step] = (first ? "" : (steps[step] ?? "")) + delta;
        showText(steps.join(""));
      },
      input_required: (e) => {
        log("input", "asks for a person");
        showInput(id, data(e));
      },
      result: async (e) => {
        stream.close();
        const result = data(e);
        if (result.status === "succeeded") {
          if (result.result !== null) showText(result.result);
          else await showOutput(id, signal);
        }
        if (selected !== id || signal.aborted) return;
        try {
          const job = /** @type {Job} */ (await (await api(`/api/v1/runs/${id}`, { signal })).json());
          renderDetail(job);
          // A failed or cancelled run's finished step whose text no event carried (one too large
          // for an event, or copied by a retry): its stored output, as a reading without a stream shows.
          const finished = Array.from({ length: job.progress.steps_completed }, (_, i) => i + 1);
          if (result.status !== "succeeded" && finished.some((step) => steps[step] === undefined)) await showOutput(id, signal);
        } catch (error) {
          if (!signal.aborted) unreadable(error, id);
        }
      },
    },
    {
      down: (gone) => {
        if (gone && selected === id) log("stream", "closed");
      },
      // Closed for good: a run deleted meanwhile leaves the view, and a refused token is said.
      reopen: reopenUnless(`/api/v1/runs/${id}`, [401, 403, 404], (error) => unreadable(error, id), signal),
    },
  );
  watch = leaving(stream, reading);
}

/**
 * What watches a run, closed with the reads it is making (the run's output, the run read once it
 * ended): a run left, deleted from here say, is not read after, to be found gone.
 */
function leaving(/** @type {{ close(): void }} */ watching, /** @type {AbortController} */ reading) {
  return {
    close() {
      watching.close();
      reading.abort();
    },
  };
}

/**
 * For a token that may read runs but not watch them: the run is read again a few seconds after
 * each reading until it ends, each change of status logged; then its output.
 */
function watchByReading(/** @type {Job} */ first) {
  const id = first.job_id;
  let last = first;
  let timer = 0;
  const reading = new AbortController();
  const { signal } = reading;
  watch = leaving({ close: () => clearTimeout(timer) }, reading);
  // A failed or cancelled run's output is what it produced before it ended, as a stream shows it.
  const ended = () => showOutput(id, signal);
  const read = async () => {
    try {
      const job = /** @type {Job} */ (await (await api(`/api/v1/runs/${id}`, { signal })).json());
      if (signal.aborted) return;
      if (job.status !== last.status) log("status", job.status.replace("_", " "));
      last = job;
      renderDetail(job);
      if (UNFINISHED.has(job.status)) timer = setTimeout(() => void read(), RUN_EVERY_MS);
      else await ended();
    } catch (error) {
      if (!signal.aborted) unreadable(error, id);
    }
  };
  log("status", `${first.status.replace("_", " ")} (read every ${RUN_EVERY_MS / 1000} s: this token cannot watch runs)`);
  if (UNFINISHED.has(first.status)) timer = setTimeout(() => void read(), RUN_EVERY_MS);
  else void ended();
}

/** A run shown that could not be read again: one deleted meanwhile, elsewhere (another tab, a bulk delete), leaves the view quietly; any other refusal is said. */
function unreadable(/** @type {unknown} */ error, /** @type {string} */ id) {
  if (!(error instanceof ApiError && error.status === 404)) refused(error);
  else if (selected === id) unselect();
}

/** The request the input panel shows (null before any). */
/** @type {string | null} */
let panelAsks = null;

export function renderDetail(/** @type {Job} */ told) {
  const job = latest(told);
  if (!job) return;
  showing(job);
  const listed = runs.get(job.job_id);
  if (listed) runs.set(job.job_id, { ...listed, ...job });
  if (listed && feed === null) renderRuns();
  $("detail-id").textContent = job.job_id;
  const status = $("detail-status");
  status.textContent = job.status.replace("_", " ");
  status.className = `status ${job.status}`;
  fillBar($("detail-progress"), job.progress?.percentage ?? 0);
  $("detail-step").textContent = whereItIs(job);
  $("detail-times").textContent = whenItRan(job);
  const error = $("detail-error");
  error.hidden = !job.error;
  error.textContent = job.error ?? "";
  $("detail-retry-of").hidden = !job.retry_of;
  $("retry-of-link").textContent = job.retry_of ?? "";
  const usage = $("detail-usage");
  usage.hidden = !job.usage?.model_calls;
  if (job.usage) usage.textContent = `${job.usage.total_tokens} tokens in ${job.usage.model_calls} model call${job.usage.model_calls === 1 ? "" : "s"}${job.usage.estimated ? " (estimated)" : ""}`;
  $("cancel-button").hidden = !can("cancel");
  /** @type {HTMLButtonElement} */ ($("cancel-button")).disabled = !UNFINISHED.has(job.status);
  // The steps that finished are copied into the new run, not run again; an earlier one may be chosen to run again from.
  const retry = $("retry-button");
  retry.hidden = !RETRYABLE.has(job.status) || !can("submit");
  offerRetryFrom(job.job_id, retry.hidden ? 0 : (job.progress?.steps_completed ?? 0) + 1);
  // PraisonAI's Delete Run page: a running job must be cancelled before it can be deleted; so must
  // a queued one, or one awaiting input (the API answers them as running).
  const rule = DELETE_RULE[job.status];
  $("delete-button").hidden = !can("delete");
  /** @type {HTMLButtonElement} */ ($("delete-button")).disabled = rule !== undefined;
  $("delete-rule").hidden = rule === undefined || !can("delete");
  $("delete-rule").textContent = rule ?? "";
  if (job.status === "awaiting_input" && job.input_request) showInput(job.job_id, job.input_request);
  else $("input-panel").hidden = true;
}

/** Where a run is: its step, or for one in line when it may start, or its place among those waiting. */
function whereItIs(/** @type {Job} */ job) {
  if (job.status === "queued" && job.scheduled_for && Date.parse(job.scheduled_for) > Date.now()) {
    return `Starts at ${new Date(job.scheduled_for).toLocaleString()}`;
  }
  if (job.status === "queued" && typeof job.queue_position === "number") return `Place in line: ${job.queue_position}`;
  const step = job.progress?.current_step;
  return step ? `Step: ${step}` : "";
}

/**
 * When a run was submitted, how long it waited to start ("at once" under the 0.1 s the page counts
 * in), and how long it ran (a wait for a person included), or that it ended without starting: each
 * time after the one before it, so none needs a date.
 */
function whenItRan(/** @type {Job} */ job) {
  const between = (/** @type {string} */ from, /** @type {string} */ to) => lasting(Date.parse(to) - Date.parse(from));
  const told = [`Submitted ${new Date(job.created_at).toLocaleString()}`];
  if (job.started_at) {
    const waited = Date.parse(job.started_at) - Date.parse(job.created_at);
    told.push(waited < 50 ? "started at once" : `started ${lasting(waited)} later`);
  }
  if (job.started_at && job.completed_at) told.push(`ran ${between(job.started_at, job.completed_at)}`);
  else if (job.completed_at) told.push(`ended ${between(job.created_at, job.completed_at)} later without starting`);
  return told.join(" · ");
}

function showInput(/** @type {string} */ id, /** @type {InputRequest} */ request) {
  panelAsks = requestKey(id, request);
  $("input-panel").hidden = false;
  $("input-denied").hidden = can("input");
  $("input-text").hidden = !can("input");
  $("input-actions").hidden = !can("input");
  $("input-prompt").textContent = request.prompt;
  $("input-output").textContent = request.output;
}

/** The idempotency key of the answer last given (the same run, action and words), kept until it is through. */
const answerKey = keptKey();

export async function answer(/** @type {string} */ action) {
  if (!selected) return;
  const id = selected;
  const text = /** @type {HTMLTextAreaElement} */ ($("input-text")).value.trim();
  const body = { action, ...(text ? { input: text } : {}) };
  const key = answerKey.for(`${id} ${JSON.stringify(body)}`);
  const kept = tokenKept();
  try {
    const asked = panelAsks;
    const toldBefore = statusesTold;
    const job = await (await api(`/api/v1/runs/${id}/input`, { method: "POST", json: body, headers: { "Idempotency-Key": key } })).json();
    answerKey.through();
    if (asked !== null) answered.add(asked);
    // Another token put in use meanwhile has its own page: this answer's reply, or its refusal, is not said on it.
    if (!kept()) return;
    // Another run picked while the reply was on its way is the one shown.
    if (selected === id) {
      /** @type {HTMLTextAreaElement} */ ($("input-text")).value = "";
      renderDetail(replied(job, toldBefore));
    }
    notice(null);
  } catch (error) {
    if (kept()) refused(error);
  }
}

/**
 * A run as the reply to the page's own request told it. An answered run is queued, then running as
 * soon as the line grants it a slot, which its stream may tell before the reply comes: a status the
 * stream told while the reply was on its way is the newer one. (An end stays an end: `latest`.)
 */
function replied(/** @type {Job} */ job, /** @type {number} */ toldBefore) {
  const newer = statusesTold !== toldBefore && shown?.job_id === job.job_id && UNFINISHED.has(shown.status);
  return newer && shown ? { ...job, status: shown.status } : job;
}

export async function cancelSelected() {
  if (!selected) return;
  const id = selected;
  const kept = tokenKept();
  try {
    // Refused as cancelled already is done too: cancelled elsewhere meanwhile, or by this request,
    // its answer lost and the request sent again. The run is read instead.
    const res = await api(`/api/v1/runs/${id}/cancel`, { method: "POST", repeatable: true }).catch((error) => {
      if (error instanceof ApiError && error.message === "Cannot cancel job with status: cancelled") return api(`/api/v1/runs/${id}`);
      throw error;
    });
    const job = await res.json();
    if (!kept()) return;
    if (selected === id) renderDetail(job);
    notice(null);
  } catch (error) {
    if (kept()) refused(error);
  }
}

/**
 * The steps a retry of run `id` may start from: 1 to the first unfinished one (0: no retry), that
 * one chosen unless the person chose another, which stands while that run is shown.
 */
function offerRetryFrom(/** @type {string} */ id, /** @type {number} */ first) {
  const choice = /** @type {HTMLSelectElement} */ ($("retry-from"));
  choice.hidden = first < 2;
  if (choice.dataset.run !== id || choice.options.length !== first) {
    choice.dataset.run = id;
    choice.replaceChildren(...Array.from({ length: first }, (_, i) => new Option(`from step ${i + 1}`, String(i + 1), false, i + 1 === first)));
  }
  labelRetry();
}

/** The Retry button names the step chosen to start from. */
export function labelRetry() {
  $("retry-button").textContent = `Retry from step ${/** @type {HTMLSelectElement} */ ($("retry-from")).value}`;
}

/** What the list tells the run shown of a run the feed told of (null: deleted), as app.js connects them. */
export function hear(/** @type {string} */ id, /** @type {Job | null} */ job) {
  if (id !== selected) return;
  if (job) renderDetail(job);
  else unselect();
}

export async function deleteSelected() {
  if (!selected) return;
  const id = selected;
  // The run is left first: its stream, and the reads it leads to, would find it gone.
  watch?.close();
  watch = null;
  const kept = tokenKept();
  try {
    // Not found is gone too: deleted elsewhere meanwhile, or by this request, its answer lost and
    // the request sent again.
    await api(`/api/v1/runs/${id}`, { method: "DELETE" }).catch((error) => {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
    });
  } catch (error) {
    if (!kept()) return;
    refused(error);
    // Not deleted: the run is read and watched again.
    if (selected === id) await select(id);
    return;
  }
  forget(id);
  if (!kept()) return;
  // Another run picked while the reply was on its way stays shown.
  if (selected === id) unselect();
  notice(null);
}
