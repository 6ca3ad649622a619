// @ts-check
/**
 * The reference frontend: submit a run, watch the tenant's runs live from its feed, watch one
 * run's stream, read its output, answer it, cancel it, retry it from where it stopped, delete
 * it. It talks to the API as any browser client would: with no credential in local development,
 * else with a scoped token (pasted, or passed as #token=... in the address, which is then taken
 * out of it), offering only what the token allows: without `stream` it reads the runs again now
 * and then instead of watching them, and without `read` it only starts them. No build step.
 */

/** @typedef {{ percentage: number, current_step: string | null, steps_completed: number, steps_total: number | null }} Progress */
/** @typedef {{ step: string, prompt: string, output: string, requested_at: string, expires_at: string }} InputRequest */
/** @typedef {{ total_tokens: number, model_calls: number, estimated: boolean }} Usage */
/**
 * @typedef {{ job_id: string, status: string, progress: Progress, created_at: string, error: string | null,
 *   tags: string[], session_id: string | null, agent_id: string | null, input_request: InputRequest | null,
 *   usage: Usage | null, retry_of: string | null, scheduled_for: string | null, queue_position: number | null }} Job
 */

/**
 * @typedef {{ expires_at: string | null, scopes: string[], runs: string[] | null, session_id: string | null,
 *   tags: string[] | null, max_submits: number | null, concurrency_key: string | null, priority: number | null,
 *   config: Record<string, string | number> | null, agent: string | null, metadata: Record<string, string> | null, submits_left: number | null }} Grant
 */

const UNFINISHED = new Set(["queued", "running", "awaiting_input"]);
/** The jobs a retry takes: it makes a new one that starts at the first unfinished step. */
const RETRYABLE = new Set(["failed", "cancelled"]);
/** Why Delete waits: the API deletes only a finished job (PraisonAI's Delete Run page: cancel first). */
const DELETE_RULE = /** @type {Record<string, string>} */ ({
  queued: "A queued job must be cancelled first.",
  running: "A running job must be cancelled first.",
  awaiting_input: "A job awaiting input must be cancelled first.",
});
const TOKEN_KEY = "edge-runs-token";

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** The scoped token in use, if any: from the address's fragment (then forgotten there), else this tab's. */
let token = takeTokenFromFragment() ?? sessionStorage.getItem(TOKEN_KEY);

function takeTokenFromFragment() {
  const found = new URLSearchParams(location.hash.slice(1)).get("token");
  if (found === null) return null;
  sessionStorage.setItem(TOKEN_KEY, found);
  history.replaceState(null, "", location.pathname + location.search);
  return found;
}

/** What the token may do (GET /api/v1/tokens/verify); null without a token, which may do everything local development allows. */
/** @type {Grant | null} */
let grant = null;

/** True unless the token lacks the scope: the API would refuse it (403), so the page does not offer it. */
const can = (/** @type {string} */ scope) => grant === null || grant.scopes.includes(scope);

/** A token limited to some runs can neither list nor watch the feed: the page shows those runs, read one by one. */
const tokenRuns = () => grant?.runs ?? null;

/** How often the page reads again what a token without `stream` may not watch: the list, and the run shown. */
const LIST_EVERY_MS = 10_000;
const RUN_EVERY_MS = 2_000;

async function loadGrant() {
  try {
    grant = token ? await (await api("/api/v1/tokens/verify")).json() : null;
  } catch (error) {
    grant = null;
    refused(error);
  }
  $("compose-denied").hidden = can("submit");
  $("submit-form").hidden = !can("submit");
  const left = grant?.submits_left ?? null;
  $("submits-left").hidden = left === null;
  $("submits-left").textContent = left === null ? "" : `This token may start ${left} more run${left === 1 ? "" : "s"}.`;
  /** @type {HTMLButtonElement} */ ($("submit-form").querySelector("button[type=submit]")).disabled = left === 0;
  /** @type {HTMLButtonElement} */ ($("retry-button")).disabled = left === 0;
  $("filter-form").hidden = tokenRuns() !== null || !can("read");
  // A token that may only start runs (the API's submit-only token) sees none of them.
  $("runs-denied").hidden = can("read");
  $("detail").hidden = !can("read");
  // A token's runs carry its tags, run its agent and its model settings, whatever the form says (the API's rule): the fields show them.
  fixField("tags", grant?.tags?.join(", "));
  fixField("agent_file", grant?.agent ?? undefined);
  for (const setting of ["model", "temperature", "max_tokens"]) fixField(setting, grant?.config?.[setting]);
}

/** A field of the New run form that the token fixes: shown with the token's value, not to be edited. */
function fixField(/** @type {string} */ name, /** @type {string | number | undefined} */ value) {
  const field = /** @type {HTMLInputElement} */ ($("submit-form").querySelector(`input[name=${name}]`));
  field.readOnly = value !== undefined;
  field.title = value !== undefined ? "Set by this token" : "";
  if (value !== undefined) field.value = String(value);
}

class ApiError extends Error {
  /** @param {number} status @param {string} detail */
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** How often a request is sent again when the answer asks for it (a deploy under way, a rate limit), and the longest wait for it. */
const RETRIES = 2;
const RETRY_WAIT_MAX_S = 5;

/**
 * A request to the API, with the token when there is one; a refusal throws its `detail`. A 503
 * (a deploy under way) or 429 whose `Retry-After` is short is sent again after it, when sending it
 * again cannot act twice: a read, a delete, or a request with an idempotency key.
 */
async function api(/** @type {string} */ path, /** @type {RequestInit & { json?: unknown }} */ init = {}) {
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.json !== undefined) headers.set("Content-Type", "application/json");
  const method = (init.method ?? "GET").toUpperCase();
  const repeatable = method === "GET" || method === "DELETE" || headers.has("Idempotency-Key");
  const send = () => fetch(path, { ...init, headers, body: init.json === undefined ? init.body : JSON.stringify(init.json) });
  let res = await send();
  for (let tries = 0; tries < RETRIES && repeatable && (res.status === 503 || res.status === 429); tries++) {
    const wait = Number(res.headers.get("Retry-After") ?? "1");
    if (!(wait >= 0 && wait <= RETRY_WAIT_MAX_S)) break;
    await new Promise((done) => setTimeout(done, wait * 1000));
    res = await send();
  }
  if (res.ok) return res;
  /** @type {unknown} */
  let detail = res.statusText;
  try {
    detail = (await res.json()).detail;
  } catch {
    // not JSON: the status text stands
  }
  throw new ApiError(res.status, typeof detail === "string" ? detail : (/** @type {{ msg?: string }[]} */ (detail)).map((d) => d.msg).join("; "));
}

/** An EventSource's address: it cannot send headers, so a token goes in the query. */
function eventsUrl(/** @type {string} */ path, /** @type {URLSearchParams} */ query = new URLSearchParams()) {
  if (token) query.set("token", token);
  const text = query.toString();
  return text ? `${path}${path.includes("?") ? "&" : "?"}${text}` : path;
}

function notice(/** @type {string | null} */ text) {
  const box = $("notice");
  box.hidden = text === null;
  box.textContent = text ?? "";
}

/** A refusal shown plainly; one that concerns the credential offers to paste a token. */
function refused(/** @type {unknown} */ error) {
  const status = error instanceof ApiError ? error.status : 0;
  notice(error instanceof Error ? error.message : String(error));
  if (status === 401 || status === 403) $("token-form").hidden = false;
}

/**
 * A stream opened with a token ends when the token expires, and EventSource, refused on coming
 * back, tells no reason: the token's expiry, known to the page, is the one it can give.
 */
function sayIfExpired() {
  if (grant?.expires_at && Date.parse(grant.expires_at) <= Date.now()) refused(new ApiError(401, "Token expired"));
}

/** @param {string} tag @param {string} [className] @param {string} [text] */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ago(/** @type {string} */ iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(iso).toLocaleString();
}

// ---- the tenant's runs: a list, kept live by the feed ------------------------------------------

/** How many runs a page of the list holds. */
const PAGE_SIZE = 50;
/** @type {Map<string, Job>} */
const runs = new Map();
let total = 0;
/** Where the list's next page starts (its cursor); null once every run of the filter is shown. */
/** @type {string | null} */
let nextCursor = null;
/** @type {EventSource | null} */
let feed = null;
/** How many of the list's pages are shown: a token without `stream` has the first read again while it is the only one. */
let pagesShown = 0;
/** Reads the list again, for a token without `stream`. */
let listTimer = 0;
/** The last list was refused: the page has nothing to say about the tenant's runs. */
let listRefused = false;
/** Jobs the feed told of while a list was loading: the feed's word is newer. */
/** @type {Set<string> | null} */
let toldWhileLoading = null;
/** What the feed told of runs while a further page was loading (null: gone, or out of the filter); null while none loads. */
/** @type {Map<string, Job | null> | null} */
let toldWhileMore = null;
/** A pending reading of the list's total. */
let totalTimer = 0;
/** The filter the list and the feed were last opened for, as its query. */
let shownFilter = "";

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

async function loadRuns() {
  if (!can("read")) {
    runs.clear();
    nextCursor = null;
    listRefused = true;
    return renderRuns();
  }
  const ids = tokenRuns();
  if (ids !== null) return loadTokenRuns(ids);
  toldWhileLoading = new Set();
  try {
    const query = filterQuery();
    query.set("page_size", String(PAGE_SIZE));
    const list = await (await api(`/api/v1/runs?${query}`)).json();
    const told = toldWhileLoading;
    const listed = /** @type {Job[]} */ (list.jobs).filter((job) => !told.has(job.job_id)).map(latest);
    for (const id of [...runs.keys()]) if (!told.has(id)) runs.delete(id);
    for (const job of listed) if (job) runs.set(job.job_id, job);
    total = list.total;
    nextCursor = list.next_cursor;
    pagesShown = 1;
    listRefused = false;
    notice(null);
  } catch (error) {
    listRefused = true;
    refused(error);
  } finally {
    toldWhileLoading = null;
  }
  renderRuns();
}

/** The runs a token limited to them reaches, each read by itself; one since deleted is left out. */
async function loadTokenRuns(/** @type {string[]} */ ids) {
  const read = await Promise.allSettled(ids.map(async (id) => latest(/** @type {Job} */ (await (await api(`/api/v1/runs/${id}`)).json()))));
  runs.clear();
  listRefused = false;
  notice(null);
  for (const outcome of read) {
    if (outcome.status === "rejected") {
      if (!(outcome.reason instanceof ApiError && outcome.reason.status === 404)) refused(outcome.reason);
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
async function loadMore() {
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
    refused(error);
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
 * have come into the filter or left it, or of a deletion the page cannot place.
 */
function refreshTotalSoon() {
  clearTimeout(totalTimer);
  totalTimer = setTimeout(async () => {
    const query = filterQuery();
    query.set("page_size", "1");
    try {
      total = (await (await api(`/api/v1/runs?${query}`)).json()).total;
      renderRuns();
    } catch (error) {
      refused(error);
    }
  }, 500);
}

function connectFeed() {
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
  feed = new EventSource(eventsUrl("/api/v1/runs/events", filterQuery()));
  feed.onopen = () => {
    state.textContent = "live";
    state.className = "pill live";
  };
  feed.onerror = () => {
    // EventSource comes back by itself (with Last-Event-ID); a refusal closes it for good.
    const closed = feed?.readyState === EventSource.CLOSED;
    state.textContent = closed ? "offline" : "reconnecting…";
    state.className = "pill down";
    if (closed) sayIfExpired();
  };
  feed.addEventListener("run", (event) => {
    const job = latest(/** @type {Job} */ (JSON.parse(/** @type {MessageEvent} */ (event).data)));
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
    } else if (known) {
      runs.delete(job.job_id);
      total = Math.max(0, total - 1);
    }
    renderRuns();
    if (job.job_id === selected) renderDetail(job);
  });
  feed.addEventListener("deleted", (event) => {
    const { job_id } = JSON.parse(/** @type {MessageEvent} */ (event).data);
    deleted.add(job_id);
    toldWhileLoading?.add(job_id);
    toldWhileMore?.set(job_id, null);
    if (runs.delete(job_id)) total = Math.max(0, total - 1);
    else if (nextCursor !== null) refreshTotalSoon();
    renderRuns();
    if (job_id === selected) unselect();
  });
  // Too far behind to resume: list again.
  feed.addEventListener("reset", () => void loadRuns());
}

function renderRuns() {
  const list = $("run-list");
  const jobs = [...runs.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  list.replaceChildren(
    ...jobs.map((job) => {
      const item = el("li");
      item.dataset.id = job.job_id;
      item.dataset.status = job.status;
      if (job.job_id === selected) item.classList.add("selected");
      item.append(el("span", "id", job.job_id), el("span", `status ${job.status}`, job.status.replace("_", " ")));
      item.append(el("span", "when", `${ago(job.created_at)}${job.progress.current_step ? ` · ${job.progress.current_step}` : ""}`));
      item.append(el("span", "when", job.agent_id ?? ""));
      const bar = el("div", "progress");
      const fill = el("div");
      fill.style.width = `${job.progress.percentage}%`;
      bar.append(fill);
      item.append(bar);
      if (job.tags.length > 0) {
        const tags = el("div", "tags");
        tags.append(...job.tags.map((t) => el("span", "tag", t)));
        item.append(tags);
      }
      item.addEventListener("click", () => void select(job.job_id));
      return item;
    }),
  );
  $("runs-total").textContent = total ? `(${total})` : "";
  $("runs-empty").hidden = jobs.length > 0 || listRefused;
  $("runs-empty").textContent = can("submit") ? "No runs yet. Submit one." : "No runs yet.";
  $("runs-more").hidden = nextCursor === null || listRefused;
}

// ---- one run: its stream, output, answer, cancel and delete ------------------------------------

/** @type {string | null} */
let selected = null;
/** The run as its panel shows it: the latest the page knows of it. */
/** @type {Job | null} */
let shown = null;
/** What keeps the run shown up to date: its stream, or for a token without `stream` a reading every few seconds. */
/** @type {{ close(): void } | null} */
let watch = null;

function unselect() {
  watch?.close();
  watch = null;
  selected = null;
  shown = null;
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

async function select(/** @type {string} */ id) {
  watch?.close();
  watch = null;
  selected = id;
  shown = null;
  renderRuns();
  $("detail-empty").hidden = true;
  $("detail-body").hidden = false;
  // One column (a phone): the run is below the list, out of sight.
  if (matchMedia("(max-width: 1000px)").matches) $("detail").scrollIntoView({ block: "start" });
  $("detail-log").replaceChildren();
  $("detail-output").textContent = "";
  /** @type {Job} */
  let job;
  try {
    job = await (await api(`/api/v1/runs/${id}`)).json();
  } catch (error) {
    refused(error);
    return;
  }
  if (selected !== id) return;
  renderDetail(job);
  if (can("stream")) watchStream(id);
  else watchByReading(job);
}

/** The named stream: what happened so far, then live, ending with the result. */
function watchStream(/** @type {string} */ id) {
  const source = new EventSource(eventsUrl(`/api/v1/runs/${id}/stream?format=named`));
  watch = source;
  const data = (/** @type {Event} */ event) => JSON.parse(/** @type {MessageEvent} */ (event).data);
  source.addEventListener("status", (e) => {
    const { status } = data(e);
    log("status", status.replace("_", " "));
    // An end is shown from the run read once its result comes: with its error and progress.
    if (UNFINISHED.has(status) && shown?.job_id === id) renderDetail({ ...shown, status });
  });
  source.addEventListener("progress", (e) => {
    const { percentage, current_step } = data(e);
    $("detail-bar").style.width = `${percentage}%`;
    log("progress", `${percentage}%${current_step ? ` · ${current_step}` : ""}`);
  });
  source.addEventListener("log", (e) => log("log", data(e).message));
  // The run's text step by step: a step's `first` text starts it anew (a broken attempt run again, an answer revised).
  const steps = /** @type {string[]} */ ([]);
  source.addEventListener("output", (e) => {
    const { delta, step = 0, first = false } = data(e);
    steps[step] = (first ? "" : (steps[step] ?? "")) + delta;
    $("detail-output").textContent = steps.join("");
  });
  source.addEventListener("input_required", (e) => {
    log("input", "asks for a person");
    showInput(id, data(e));
  });
  source.addEventListener("result", async (e) => {
    source.close();
    const result = data(e);
    if (result.status === "succeeded") {
      $("detail-output").textContent = result.result ?? (await readOutput(id));
    }
    if (selected !== id) return;
    try {
      renderDetail(/** @type {Job} */ (await (await api(`/api/v1/runs/${id}`)).json()));
    } catch (error) {
      unreadable(error, id);
    }
  });
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED || selected !== id) return;
    log("stream", "closed");
    sayIfExpired();
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
  let closed = false;
  watch = {
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
  // A failed or cancelled run's output is what it produced before it ended, as a stream shows it.
  const ended = async () => {
    $("detail-output").textContent = await readOutput(id);
  };
  const read = async () => {
    try {
      const job = /** @type {Job} */ (await (await api(`/api/v1/runs/${id}`)).json());
      if (closed) return;
      if (job.status !== last.status) log("status", job.status.replace("_", " "));
      last = job;
      renderDetail(job);
      if (UNFINISHED.has(job.status)) timer = setTimeout(() => void read(), RUN_EVERY_MS);
      else await ended();
    } catch (error) {
      if (!closed) unreadable(error, id);
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

/** The output text, its first MiB at most (larger outputs are a link away). */
async function readOutput(/** @type {string} */ id) {
  try {
    const res = await api(`/api/v1/runs/${id}/output`, { headers: { Range: "bytes=0-1048575" } });
    return await res.text();
  } catch (error) {
    return error instanceof ApiError && error.status === 404 ? "" : `(output unavailable: ${/** @type {Error} */ (error).message})`;
  }
}

/** The runs the page knows were deleted (here, or elsewhere as the feed told). */
/** @type {Set<string>} */
const deleted = new Set();

/** A run's request for input, named by the run and when it asked. */
const requestKey = (/** @type {string} */ id, /** @type {InputRequest} */ request) => `${id} ${request.requested_at}`;
/** The requests for input answered from this page. */
/** @type {Set<string>} */
const answered = new Set();
/** The request the input panel shows (null before any). */
/** @type {string | null} */
let panelAsks = null;

/**
 * A run as one source tells it, unless the page knows it ended: then as it ended; or nothing if the
 * page knows it was deleted. Nothing leaves an end but deletion, nor comes back from deletion, and
 * the sources do not keep pace with each other (the tenant's feed and list come from its
 * projection, which hears of a change after the run's own stream tells it), so an unfinished state
 * told after an end, or any state after a deletion, is an older one. So is a run awaiting an input
 * this page has answered: it is shown as the page last saw it since, or not at all.
 */
function latest(/** @type {Job} */ told) {
  if (deleted.has(told.job_id)) return null;
  if (!UNFINISHED.has(told.status)) return told;
  const ended = [runs.get(told.job_id), shown].find((job) => job?.job_id === told.job_id && !UNFINISHED.has(job.status));
  if (ended) return ended;
  const key = told.status === "awaiting_input" && told.input_request ? requestKey(told.job_id, told.input_request) : null;
  if (key === null || !answered.has(key)) return told;
  const asks = (/** @type {Job} */ job) => job.status === "awaiting_input" && job.input_request !== null && requestKey(job.job_id, job.input_request) === key;
  return [shown, runs.get(told.job_id)].find((job) => job?.job_id === told.job_id && !asks(job)) ?? null;
}

function renderDetail(/** @type {Job} */ told) {
  const job = latest(told);
  if (!job) return;
  shown = job;
  const listed = runs.get(job.job_id);
  if (listed) runs.set(job.job_id, { ...listed, ...job });
  if (listed && feed === null) renderRuns();
  $("detail-id").textContent = job.job_id;
  const status = $("detail-status");
  status.textContent = job.status.replace("_", " ");
  status.className = `status ${job.status}`;
  $("detail-bar").style.width = `${job.progress?.percentage ?? 0}%`;
  $("detail-step").textContent = whereItIs(job);
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

function showInput(/** @type {string} */ id, /** @type {InputRequest} */ request) {
  panelAsks = requestKey(id, request);
  $("input-panel").hidden = false;
  $("input-denied").hidden = can("input");
  $("input-text").hidden = !can("input");
  $("input-actions").hidden = !can("input");
  $("input-prompt").textContent = request.prompt;
  $("input-output").textContent = request.output;
}

/**
 * An idempotency key kept for a request that makes something (a run, an answer) until it is
 * through: asked again (the same `what`) after its reply was lost or refused for a while, it is the
 * same request, and the API answers it with what the first made or did, never doing it twice.
 */
function keptKey() {
  /** @type {{ what: string, key: string } | null} */
  let kept = null;
  return {
    /** The key for `what`: the one kept, if it was for `what`; else a new one. */
    for: (/** @type {string} */ what) => {
      if (kept?.what !== what) kept = { what, key: crypto.randomUUID() };
      return kept.key;
    },
    through: () => {
      kept = null;
    },
  };
}

/** The idempotency key of the answer last given (the same run, action and words), kept until it is through. */
const answerKey = keptKey();

async function answer(/** @type {string} */ action) {
  if (!selected) return;
  const text = /** @type {HTMLTextAreaElement} */ ($("input-text")).value.trim();
  const body = { action, ...(text ? { input: text } : {}) };
  const key = answerKey.for(`${selected} ${JSON.stringify(body)}`);
  try {
    const asked = panelAsks;
    const job = await (await api(`/api/v1/runs/${selected}/input`, { method: "POST", json: body, headers: { "Idempotency-Key": key } })).json();
    answerKey.through();
    if (asked !== null) answered.add(asked);
    /** @type {HTMLTextAreaElement} */ ($("input-text")).value = "";
    renderDetail(job);
    notice(null);
  } catch (error) {
    refused(error);
  }
}

async function cancelSelected() {
  if (!selected) return;
  try {
    renderDetail(await (await api(`/api/v1/runs/${selected}/cancel`, { method: "POST" })).json());
    notice(null);
  } catch (error) {
    refused(error);
  }
}

/** The idempotency key of the run last asked for (a submit, a retry), kept until a run comes of it. */
const runKey = keptKey();

/**
 * Sends a request that makes a run (a submit, a retry; `what` says which, and with what), with an
 * idempotency key, then watches the new run; its button waits meanwhile.
 */
async function startRun(/** @type {HTMLButtonElement} */ button, /** @type {string} */ what, /** @type {(init: RequestInit) => Promise<Response>} */ request) {
  button.disabled = true;
  const key = runKey.for(what);
  try {
    const accepted = await (await request({ headers: { "Idempotency-Key": key } })).json();
    runKey.through();
    notice(null);
    // A token limited to the runs it names does not reach the ones it starts (the API's rule), and one without `read` sees none.
    const why = !can("read") ? "this token cannot see runs" : tokenRuns() !== null ? "this token reaches only the runs it names" : null;
    $("started").hidden = why === null;
    $("started").textContent = why === null ? "" : `Started ${accepted.job_id}; ${why}, so it cannot show this one.`;
    if (why === null) await select(accepted.job_id);
  } catch (error) {
    refused(error);
  } finally {
    // What the token has left after this submit, or after its refusal (spent in another tab, say).
    if (grant?.submits_left != null) await loadGrant();
    button.disabled = grant?.submits_left === 0;
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
function labelRetry() {
  $("retry-button").textContent = `Retry from step ${/** @type {HTMLSelectElement} */ ($("retry-from")).value}`;
}

/** A new run from the chosen step of the selected one (its first unfinished step unless another was chosen), watched in its place. */
async function retrySelected() {
  const id = selected;
  if (!id) return;
  const from = Number(/** @type {HTMLSelectElement} */ ($("retry-from")).value) || undefined;
  await startRun(/** @type {HTMLButtonElement} */ ($("retry-button")), `retry ${id} from ${from}`, (init) =>
    api(`/api/v1/runs/${id}/retry`, { ...init, method: "POST", json: from === undefined ? {} : { from_step: from } }),
  );
}

async function deleteSelected() {
  if (!selected) return;
  const id = selected;
  try {
    await api(`/api/v1/runs/${id}`, { method: "DELETE" });
    deleted.add(id);
    if (runs.delete(id)) total = Math.max(0, total - 1);
    unselect();
    notice(null);
  } catch (error) {
    refused(error);
  }
}

// ---- submitting --------------------------------------------------------------------------------

/**
 * The agent field names an agent as a job's agent_id does: a bundled recipe as `recipe:<name>`,
 * an agent file by its name (or `file:<name>`). A token's agent fills it, and the token sets it.
 */
function agentFields(/** @type {string} */ agent) {
  if (grant?.agent || agent === "") return {};
  return agent.startsWith("recipe:") ? { recipe_name: agent.slice("recipe:".length) } : { agent_file: agent.replace(/^file:/, "") };
}

async function submit(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.target);
  const data = new FormData(form);
  const text = (/** @type {string} */ name) => String(data.get(name) ?? "").trim();
  const number = (/** @type {string} */ name) => (text(name) === "" ? undefined : Number(text(name)));
  /** @type {Record<string, unknown>} */
  const simulate = {};
  for (const knob of ["steps", "step_ms", "fail_at_step", "input_at_step"]) if (number(knob) !== undefined) simulate[knob] = number(knob);
  /** @type {Record<string, unknown>} */
  const config = { model: text("model") || undefined, temperature: number("temperature"), max_tokens: number("max_tokens") };
  if (Object.keys(simulate).length > 0) config.simulate = simulate;
  const tags = text("tags").split(",").map((t) => t.trim()).filter(Boolean);
  const body = { prompt: text("prompt"), ...agentFields(text("agent_file")), tags: tags.length ? tags : undefined, config };
  const button = /** @type {HTMLButtonElement} */ (form.querySelector("button[type=submit]"));
  await startRun(button, `submit ${JSON.stringify(body)}`, (init) => api("/api/v1/runs", { ...init, method: "POST", json: body }));
}

// ---- wiring ------------------------------------------------------------------------------------

/** With what the token allows known, the runs it reaches: the list and the feed, or its runs one by one. */
async function begin() {
  await loadGrant();
  connectFeed();
  await loadRuns();
}

function start() {
  $("submit-form").addEventListener("submit", (e) => void submit(/** @type {SubmitEvent} */ (e)));
  $("filter-form").addEventListener("change", () => {
    // An edit that leaves the filter as it was (a space after the tag, say) lists nothing again.
    if (filterQuery().toString() === shownFilter) return;
    connectFeed();
    void loadRuns();
  });
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
  for (const button of document.querySelectorAll("[data-answer]")) {
    button.addEventListener("click", () => void answer(/** @type {HTMLElement} */ (button).dataset.answer ?? ""));
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = /** @type {HTMLInputElement} */ ($("token")).value.trim() || null;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
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
