// @ts-check
/** What the token in use allows, and the page shaped to it: nothing offered that the API would refuse. */
import { $, refused } from "./page.js";
import { api, token, tokenKept } from "./requests.js";

/** @typedef {import("./requests.js").Grant} Grant */

/** What the token may do (GET /api/v1/tokens/verify); null without a token, which may do everything local development allows. */
/** @type {Grant | null} */
export let grant = null;

/** True unless the token lacks the scope: the API would refuse it (403), so the page does not offer it. */
export const can = (/** @type {string} */ scope) => grant === null || grant.scopes.includes(scope);

/** A token limited to some runs can neither list nor watch the feed: the page shows those runs, read one by one. */
export const tokenRuns = () => grant?.runs ?? null;

/**
 * Reads what the token in use may do, and shapes the page to it. False if another token was put in
 * use meanwhile: this one's answer, come late, is dropped, and the later token's stands.
 */
export async function loadGrant() {
  const kept = tokenKept();
  /** @type {Grant | null} */
  let read = null;
  /** @type {unknown} */
  let failure = null;
  try {
    read = token ? await (await api("/api/v1/tokens/verify")).json() : null;
  } catch (error) {
    failure = error;
  }
  if (!kept()) return false;
  if (failure !== null) refused(failure);
  grant = read;
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
  return true;
}

/** A field of the New run form that the token fixes: shown with the token's value, not to be edited. */
function fixField(/** @type {string} */ name, /** @type {string | number | undefined} */ value) {
  const field = /** @type {HTMLInputElement} */ ($("submit-form").querySelector(`input[name=${name}]`));
  field.readOnly = value !== undefined;
  field.title = value !== undefined ? "Set by this token" : "";
  if (value !== undefined) field.value = String(value);
}

