// @ts-check
/** Starting runs, a submit or a retry, each under an idempotency key kept until a run comes of it; the new run is then watched. */
import { can, grant, loadGrant, tokenRuns } from "./grant.js";
import { $, notice, refused } from "./page.js";
import { api, keptKey, tokenKept } from "./requests.js";
import { selected } from "./known.js";
import { select } from "./run.js";

/** The idempotency key of the run last asked for (a submit, a retry), kept until a run comes of it. */
const runKey = keptKey();

/**
 * Sends a request that makes a run (a submit, a retry; `what` says which, and with what), with an
 * idempotency key, then watches the new run; its button waits meanwhile. A run made for a token put
 * out of use meanwhile is only named.
 */
async function startRun(/** @type {HTMLButtonElement} */ button, /** @type {string} */ what, /** @type {(init: RequestInit) => Promise<Response>} */ request) {
  button.disabled = true;
  const kept = tokenKept();
  const key = runKey.for(what);
  try {
    const accepted = await (await request({ headers: { "Idempotency-Key": key } })).json();
    runKey.through();
    if (!kept()) {
      // Another token was put in use meanwhile: the run is the earlier token's, not opened with the later one, which
      // may not reach it. The notice names it, where the note under the form would not show for a token that may not submit.
      notice(`Started ${accepted.job_id} with the token in use before this one.`);
      return;
    }
    notice(null);
    // A token limited to the runs it names does not reach the ones it starts (the API's rule), and one without `read` sees none.
    const why = !can("read") ? "this token cannot see runs" : tokenRuns() !== null ? "this token reaches only the runs it names" : null;
    $("started").hidden = why === null;
    $("started").textContent = why === null ? "" : `Started ${accepted.job_id}; ${why}, so it cannot show this one.`;
    if (why === null) await select(accepted.job_id);
  } catch (error) {
    // A refusal of the earlier token's request is not this one's to say.
    if (kept()) refused(error);
  } finally {
    // What the token has left after this submit, or after its refusal (spent in another tab, say).
    if (grant?.submits_left != null) await loadGrant();
    button.disabled = grant?.submits_left === 0;
  }
}

/** A new run from the chosen step of the selected one (its first unfinished step unless another was chosen), watched in its place. */
export async function retrySelected() {
  const id = selected;
  if (!id) return;
  const from = Number(/** @type {HTMLSelectElement} */ ($("retry-from")).value) || undefined;
  await startRun(/** @type {HTMLButtonElement} */ ($("retry-button")), `retry ${id} from ${from}`, (init) =>
    api(`/api/v1/runs/${id}/retry`, { ...init, method: "POST", json: from === undefined ? {} : { from_step: from } }),
  );
}

/**
 * The agent field names an agent as a job's agent_id does: a bundled recipe as `recipe:<name>`,
 * an agent file by its name (or `file:<name>`). A token's agent fills it, and the token sets it.
 */
function agentFields(/** @type {string} */ agent) {
  if (grant?.agent || agent === "") return {};
  return agent.startsWith("recipe:") ? { recipe_name: agent.slice("recipe:".length) } : { agent_file: agent.replace(/^file:/, "") };
}

export async function submit(/** @type {SubmitEvent} */ event) {
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
