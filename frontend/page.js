// @ts-check
/** The page's own helpers: its elements, a notice for what went wrong, how long ago a time was, and how long something took. */
import { ApiError } from "./requests.js";

/** @param {string} id */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** What said the notice shown: the reading of the runs listed ("list"), or what a person did (""). */
let noticeBy = "";

/** Says `text` (null: nothing), as `by` says it. */
export function notice(/** @type {string | null} */ text, by = "") {
  const box = $("notice");
  box.hidden = text === null;
  box.textContent = text ?? "";
  noticeBy = by;
}

/** A refusal shown plainly; one that concerns the credential offers to paste a token. */
export function refused(/** @type {unknown} */ error, by = "") {
  const status = error instanceof ApiError ? error.status : 0;
  notice(error instanceof Error ? error.message : String(error), by);
  if (status === 401 || status === 403) $("token-form").hidden = false;
}

/**
 * The runs listed were read as asked: a refusal of an earlier reading is said no more. What a
 * person did and was refused stays said, though the list is read again behind it (the feed
 * opened anew, the list read again every 10 s).
 */
export function listed() {
  if (noticeBy === "list") notice(null);
}

/**
 * A bar (`.progress`, a progress bar to assistive technology) filled to `percentage`: its fill as
 * wide, and the value it announces.
 */
export function fillBar(/** @type {HTMLElement} */ bar, /** @type {number} */ percentage) {
  bar.setAttribute("aria-valuenow", String(percentage));
  /** @type {HTMLElement} */ (bar.firstElementChild).style.width = `${percentage}%`;
}

/** @param {string} tag @param {string} [className] @param {string} [text] */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function ago(/** @type {string} */ iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(iso).toLocaleString();
}

/** How long `ms` milliseconds are, in `ago`'s units: to a tenth of a second under 10 s. */
export function lasting(/** @type {number} */ ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}
