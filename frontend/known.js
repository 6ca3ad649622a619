// @ts-check
/**
 * What the page knows of runs, whichever source told it (the list, the feed, a run's stream, an
 * answer to a request): the runs listed, the run shown, the runs deleted and the requests for input
 * answered; and `latest`, a run as one source tells it, set against what the page knows.
 */

/** @typedef {import("./requests.js").Job} Job */
/** @typedef {import("./requests.js").InputRequest} InputRequest */

export const UNFINISHED = new Set(["queued", "running", "awaiting_input"]);

/** The runs the list shows, by id. */
/** @type {Map<string, Job>} */
export const runs = new Map();

/** The run picked to be shown. */
/** @type {string | null} */
export let selected = null;
/** The run as its panel shows it: the latest the page knows of it. */
/** @type {Job | null} */
export let shown = null;

/** A run picked to be shown (null: none), not read yet. */
export function pick(/** @type {string | null} */ id) {
  selected = id;
  shown = null;
}

/** The run shown, as the page now knows it. */
export function showing(/** @type {Job} */ job) {
  shown = job;
}

/** The runs the page knows were deleted (here, or elsewhere as the feed told): never shown again. */
/** @type {Set<string>} */
export const deleted = new Set();

/** A run's request for input, named by the run and when it asked. */
export const requestKey = (/** @type {string} */ id, /** @type {InputRequest} */ request) => `${id} ${request.requested_at}`;
/** The requests for input answered from this page. */
/** @type {Set<string>} */
export const answered = new Set();

/**
 * A run as one source tells it, unless the page knows it ended: then as it ended; or nothing if the
 * page knows it was deleted. Nothing leaves an end but deletion, nor comes back from deletion, and
 * the sources do not keep pace with each other (the tenant's feed and list come from its
 * projection, which hears of a change after the run's own stream tells it), so an unfinished state
 * told after an end, or any state after a deletion, is an older one. So is a run awaiting an input
 * this page has answered: it is shown as the page last saw it since, or not at all.
 */
export function latest(/** @type {Job} */ told) {
  if (deleted.has(told.job_id)) return null;
  if (!UNFINISHED.has(told.status)) return told;
  const ended = [runs.get(told.job_id), shown].find((job) => job?.job_id === told.job_id && !UNFINISHED.has(job.status));
  if (ended) return ended;
  const key = told.status === "awaiting_input" && told.input_request ? requestKey(told.job_id, told.input_request) : null;
  if (key === null || !answered.has(key)) return told;
  const asks = (/** @type {Job} */ job) => job.status === "awaiting_input" && job.input_request !== null && requestKey(job.job_id, job.input_request) === key;
  return [shown, runs.get(told.job_id)].find((job) => job?.job_id === told.job_id && !asks(job)) ?? null;
}
