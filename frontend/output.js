// @ts-check
/**
 * The output of the run shown, written here only: its text as its stream tells it, as much of what
 * is stored as the page shows, and the whole as a download.
 */
import { $, el, refused } from "./page.js";
import { ApiError, api, tokenKept } from "./requests.js";
import { selected } from "./known.js";

/** How much of a run's stored output the page shows; a longer one is offered whole, as a download. */
const OUTPUT_SHOWN_BYTES = 1024 * 1024;

/**
 * The run's stored output, its first OUTPUT_SHOWN_BYTES: a longer one is said to be cut, with its
 * size, and offered whole as a download.
 */
export async function showOutput(/** @type {string} */ id, /** @type {AbortSignal} */ signal) {
  /** @type {string} */
  let text;
  let whole = 0;
  try {
    const res = await api(`/api/v1/runs/${id}/output`, { headers: { Range: `bytes=0-${OUTPUT_SHOWN_BYTES - 1}` }, signal });
    const bytes = await res.arrayBuffer();
    // 206 names the whole size (`bytes 0-1048575/3000000`); 200 is the whole.
    whole = Number(/\/(\d+)$/.exec(res.headers.get("Content-Range") ?? "")?.[1] ?? bytes.byteLength);
    // Cut, the text may end inside a character: decoded as a stream, its first bytes wait for the rest.
    text = new TextDecoder().decode(bytes, { stream: whole > bytes.byteLength });
  } catch (error) {
    if (signal.aborted) return;
    text = error instanceof ApiError && error.status === 404 ? "" : `(output unavailable: ${/** @type {Error} */ (error).message})`;
  }
  if (selected !== id) return;
  showText(text);
  const cut = whole > OUTPUT_SHOWN_BYTES;
  $("output-cut").hidden = !cut;
  $("output-cut-text").textContent = cut ? `The first ${mib(OUTPUT_SHOWN_BYTES)} of ${mib(whole)}.` : "";
}

/** `text` as the run's output, whole: the text its stream told so far, or none yet. */
export function showText(/** @type {string} */ text) {
  $("detail-output").textContent = text;
  $("output-cut").hidden = true;
}

const mib = (/** @type {number} */ bytes) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/** The whole output of the run shown, saved as a file (with the token, which a plain link would not carry). */
export async function downloadOutput() {
  const id = selected;
  if (!id) return;
  const button = /** @type {HTMLButtonElement} */ ($("output-download"));
  button.disabled = true;
  const kept = tokenKept();
  try {
    const blob = await (await api(`/api/v1/runs/${id}/output`)).blob();
    const link = /** @type {HTMLAnchorElement} */ (el("a"));
    link.href = URL.createObjectURL(blob);
    link.download = `${id}.txt`;
    link.click();
    // Let go once the download has surely taken it, so that the page keeps no copy.
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  } catch (error) {
    if (kept()) refused(error);
  } finally {
    button.disabled = false;
  }
}
