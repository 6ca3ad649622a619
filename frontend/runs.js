// @ts-check
/** The tenant's runs: a list, a page at a time, kept live by the feed (or, for a token without `stream`, read again now and then). */
import { lastingEvents } from "./events.js";
import { can, tokenRuns } from "./grant.js";
import { $, ago, el, fillBar, listed, refused } from "./page.js";
import { ApiError, api } from "./requests.js";
import { deleted, latest, runs, selected } from "./known.js";

/** @typedef {import("./requests.js").Job} Job */

/** How often the list is read again for a token without `stream`, which may not watch the feed. */
const LIST_EVERY_MS = 10_000;
/** How many runs a page of the list holds. */
const PAGE_SIZE = 50;
let total = 0;
/** Where the list's next page starts (its cursor); null once every run of the filter is shown. */
/** @type {string | null} */
let nextCursor = null;
/** The tenant's feed, while it is watched. */
/** @type {{ close(): void } | null} */
export let feed = null;
/** How many of the list's pages are shown: a token without `stream` has the first read again while it is the only one. */
let pagesShown = 0;
/** Reads the list again, for a token without `stream`. */
let listTimer = 0;
/** The last list was refused: the page has nothing to say about the tenant's runs. */
let listRefused = false;
/**
 * Jobs the feed told of while the runs were being read (loadRuns): the feed's word is newer. Each
 * reading has its own; one that finds another here was overtaken by a later reading.
 */
/** @type {Set<string> | null} */
let toldWhileLoading = null;
/** What the feed told of runs while a further page was loading (null: gone, or out of the filter); null while none loads. */
/** @type {Map<string, Job | null> | null} */
let toldWhileMore = null;
/** A pending reading of the list's total. */
let totalTimer = 0;
/** The filter the list and the feed were last opened for, as its query. */
let shownFilter = "";

/**
 * What the list tells the run shown (run.js), as app.js connects them, so that the list needs
 * nothing of it: a run picked from the list, and what the feed told of a run (null: deleted).
 * @type {{ picked(id: string): void, told(id: string, job: Job | null): void }}
 */
const panel = { picked() {}, told() {} };

/** Connects the list to the run shown. */
export function connectPanel(/** @type {typeof panel} */ handlers) {
  Object.assign(panel, handlers);
}

/** A run out of the list and its total; false if the list did not show it. */
function unlist(/** @type {string} */ id) {
  if (!runs.delete(id)) return false;
  total = Math.max(0, total - 1);
  return true;
}

/** A run deleted, here or elsewhere: never shown again, and out of the list; false if the list did not show it. */
export function forget(/** @type {string} */ id) {
  deleted.add(id);
  return unlist(id);
}

function filter() {
  const form = /** @type {HTMLFormElement} */ ($("filter-form"));
  const data = new FormData(form);
  return { status: String(data.get("status") ?? ""), tag: String(data.get("tag") ?? "").trim() };
}

function filterQuery() {
  const { status, tag } = filter();
  const query = new URLSearchParams();
  if (status) query.set("status", status);
  if (tag) query.set("tag", tag);
  return query;
}

const matches = (/** @type {Job} */ job) => {
  const { status, tag } = filter();
  return (!status || job.status === status) && (!tag || job.tags.includes(tag));
};

/**
 * The runs the token reaches, read anew: the list's first page, or a token's runs one by one. Read
 * again before an earlier reading was answered (the feed opened anew, the filter changed, another
 * token put in use), the later reading stands, and the earlier is dropped when it comes.
 */
export async function loadRuns() {
  if (!can("read")) {
    toldWhileLoading = null;
    runs.clear();
    nextCursor = null;
    listRefused = true;
    return renderRuns();
  }
  const told = (toldWhileLoading = new Set());
  const ids = tokenRuns();
  if (ids !== null) return loadTokenRuns(ids, told);
  try {
    const query = filterQuery();
    query.set("page_size", String(PAGE_SIZE));
    const list = await (await api(`/api/v1/runs?${query}`)).json();
    if (toldWhileLoading !== told) return;
    const fromList = /** @type {Job[]} */ (list.jobs).filter((job) => !told.has(job.job_id)).map(latest);
    for (const id of [...runs.keys()]) if (!told.has(id)) runs.delete(id);
    for (const job of fromList) if (job) runs.set(job.job_id, job);
    total = list.total;
    nextCursor = list.next_cursor;
    pagesShown = 1;
    listRefused = false;
    listed();
  } catch (error) {
    if (toldWhileLoading !== told) return;
    listRefused = true;
    refused(error, "list");
  } finally {
    if (toldWhileLoading === told) toldWhileLoading = null;
  }
  renderRuns();
}

/** The runs a token limited to them reaches, each read by itself; one since deleted is left out. */
async function loadTokenRuns(/** @type {string[]} */ ids, /** @type {Set<string>} */ told) {
  const read = await Promise.allSettled(ids.map(async (id) => latest(/** @type {Job} */ (await (await api(`/api/v1/runs/${id}`)).json()))));
  if (toldWhileLoading !== told) return;
  toldWhileLoading = null;
  runs.clear();
  listRefused = false;
  listed();
  for (const outcome of read) {
    if (outcome.status === "rejected") {
      if (!(outcome.reason instanceof ApiError && outcome.reason.status === 404)) refused(outcome.reason, "list");
    } else if (outcome.value) runs.set(outcome.value.job_id, outcome.value);
  }
  total = runs.size;
  nextCursor = null;
  renderRuns();
}

/**
 * The list's next page, below the runs shown. The cursor is a place in the tenant's order, so runs
 * that arrived since do not shift it; a run the feed told of meanwhile is shown as the feed said,
 * or not at all if it is gone. One page loads at a time.
 */
export async function loadMore() {
  const cursor = nextCursor;
  if (cursor === null || toldWhileMore !== null) return;
  const told = (toldWhileMore = new Map());
  const query = filterQuery();
  const asked = query.toString();
  query.set("page_size", String(PAGE_SIZE));
  query.set("cursor", cursor);
  try {
    const list = await (await api(`/api/v1/runs?${query}`)).json();
    // The filter changed meanwhile: this page belongs to another list.
    if (filterQuery().toString() !== asked || nextCursor !== cursor) return;
    for (const job of /** @type {Job[]} */ (list.jobs)) {
      const now = told.has(job.job_id) ? told.get(job.job_id) : latest(job);
      if (now && !runs.has(job.job_id)) runs.set(job.job_id, now);
    }
    nextCursor = list.next_cursor;
    pagesShown += 1;
  } catch (error) {
    refused(error, "list");
  } finally {
    toldWhileMore = null;
  }
  renderRuns();
}

/** A run older than every run shown while older pages are not loaded yet: its place is on one of those. */
function beyondShown(/** @type {Job} */ job) {
  if (nextCursor === null) return false;
  let oldest = null;
  for (const run of runs.values()) if (oldest === null || run.created_at < oldest) oldest = run.created_at;
  return oldest !== null && job.created_at < oldest;
}

/**
 * Reads the list's total again in a moment: the feed told of a run on a page not shown, which may
 * have come into the filter or left it, or of a deletion the page cannot place. Its answer is
 * dropped if the feed was opened anew meanwhile (another filter, another token): the list read
 * with that feed tells the total.
 */
function refreshTotalSoon() {
  clearTimeout(totalTimer);
  const toldBy = feed;
  totalTimer = setTimeout(async () => {
    const query = filterQuery();
    query.set("page_size", "1");
    try {
      const read = (await (await api(`/api/v1/runs?${query}`)).json()).total;
      if (feed !== toldBy) return;
      total = read;
      renderRuns();
    } catch (error) {
      if (feed === toldBy) refused(error, "list");
    }
  }, 500);
}

/** The filter was edited: the list and the feed are opened again for it, unless it is as it was (a space after the tag, say). */
export function refilter() {
  if (filterQuery().toString() === shownFilter) return;
  connectFeed();
  void loadRuns();
}

export function connectFeed() {
  feed?.close();
  feed = null;
  clearInterval(listTimer);
  const state = $("feed-state");
  // Without the feed, the run watched keeps its entry in the list up to date (renderDetail).
  state.hidden = tokenRuns() !== null || !can("read");
  if (state.hidden) return;
  shownFilter = filterQuery().toString();
  if (!can("stream")) {
    state.textContent = "not live";
    state.className = "pill";
    state.title = `This token cannot watch the feed: the list is read again every ${LIST_EVERY_MS / 1000} s`;
    listTimer = setInterval(() => {
      if (pagesShown === 1) void loadRuns();
    }, LIST_EVERY_MS);
    return;
  }
  state.title = "The tenant's live feed";
  state.textContent = "connecting…";
  state.className = "pill";
  feed = lastingEvents("/api/v1/runs/events", filterQuery(), { run: heardRun, deleted: heardDeleted, reset: () => void loadRuns() }, {
    open: (missed) => {
      state.textContent = "live";
      state.className = "pill live";
      // Opened again with no change had before: what changed meanwhile is not in it.
      if (missed) void loadRuns();
    },
    // A dropped connection comes back by itself; one refused for its credential does not.
    down: (gone) => {
      state.textContent = gone ? "offline" : "reconnecting…";
      state.className = "pill down";
    },
  });
}

/** What the feed tells of a run. */
function heardRun(/** @type {MessageEvent} */ event) {
  const job = latest(/** @type {Job} */ (JSON.parse(event.data)));
  if (!job) return;
  toldWhileMore?.set(job.job_id, matches(job) ? job : null);
  const known = runs.has(job.job_id);
  if (!known && beyondShown(job)) {
    // Its page, once shown, shows it; only the total may have changed.
    refreshTotalSoon();
    return;
  }
  toldWhileLoading?.add(job.job_id);
  if (matches(job)) {
    if (!known) total += 1;
    runs.set(job.job_id, job);
  } else if (known) unlist(job.job_id);
  renderRuns();
  panel.told(job.job_id, job);
}

/** The feed tells of a run deleted. */
function heardDeleted(/** @type {MessageEvent} */ event) {
  const { job_id } = JSON.parse(event.data);
  toldWhileLoading?.add(job_id);
  toldWhileMore?.set(job_id, null);
  if (!forget(job_id) && nextCursor !== null) refreshTotalSoon();
  renderRuns();
  panel.told(job_id, null);
}

/**
 * The list drawn anew. Each run is picked by a click anywhere on its entry, or from the keyboard by
 * its id, a button; a button that had the focus has it again once the list is drawn anew (the feed
 * redraws it with each change), so that the keyboard keeps its place.
 */
export function renderRuns() {
  const list = $("run-list");
  const jobs = [...runs.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  const focused = list.contains(document.activeElement) ? document.activeElement?.closest("li")?.dataset.id : undefined;
  list.replaceChildren(
    ...jobs.map((job) => {
      const item = el("li");
      item.dataset.id = job.job_id;
      item.dataset.status = job.status;
      const pick = /** @type {HTMLButtonElement} */ (el("button", "id", job.job_id));
      pick.type = "button";
      if (job.job_id === selected) {
        item.classList.add("selected");
        pick.setAttribute("aria-current", "true");
      }
      item.append(pick, el("span", `status ${job.status}`, job.status.replace("_", " ")));
      item.append(el("span", "when", `${ago(job.created_at)}${job.progress.current_step ? ` · ${job.progress.current_step}` : ""}`));
      item.append(el("span", "when", job.agent_id ?? ""));
      const bar = el("div", "progress");
      bar.setAttribute("role", "progressbar");
      bar.setAttribute("aria-label", `Progress of ${job.job_id}`);
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", "100");
      bar.append(el("div"));
      fillBar(bar, job.progress.percentage);
      item.append(bar);
      if (job.tags.length > 0) {
        const tags = el("div", "tags");
        tags.append(...job.tags.map((t) => el("span", "tag", t)));
        item.append(tags);
      }
      item.addEventListener("click", () => panel.picked(job.job_id));
      return item;
    }),
  );
  if (focused) /** @type {HTMLButtonElement | null} */ (list.querySelector(`li[data-id="${CSS.escape(focused)}"] button`))?.focus();
  $("runs-total").textContent = total ? `(${total})` : "";
  $("runs-empty").hidden = jobs.length > 0 || listRefused;
  $("runs-empty").textContent = can("submit") ? "No runs yet. Submit one." : "No runs yet.";
  $("runs-more").hidden = nextCursor === null || listRefused;
}
