// @ts-check
/** The page's own helpers: its elements, a notice for what went wrong, and how long ago a time was. */
import { ApiError } from "./requests.js";

/** @param {string} id */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

export function notice(/** @type {string | null} */ text) {
  const box = $("notice");
  box.hidden = text === null;
  box.textContent = text ?? "";
}

/** A refusal shown plainly; one that concerns the credential offers to paste a token. */
export function refused(/** @type {unknown} */ error) {
  const status = error instanceof ApiError ? error.status : 0;
  notice(error instanceof Error ? error.message : String(error));
  if (status === 401 || status === 403) $("token-form").hidden = false;
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
