/**
 * What an OpenAI-compatible endpoint's refusal says, and whether another try may succeed, as
 * OpenAI's SDKs judge it.
 */
import { retryAfterMs } from "../../http/retry-after";
import { StepFailed, TransientError } from "../types";

/** The longest wait a provider's answer is heeded for before the step is tried again. */
const RETRY_AFTER_MAX_MS = 3_600_000;

/** The wait the answer asks for (`Retry-After`, `retry-after-ms`), at most RETRY_AFTER_MAX_MS. */
function waitAsked(res: Response): number | undefined {
  const ms = retryAfterMs(res.headers);
  return ms === undefined ? undefined : Math.min(ms, RETRY_AFTER_MAX_MS);
}

/** How much of an error answer is read: enough for a provider's JSON error, however it is laid out. */
const ERROR_BODY_CHARS = 16_384;
/** How much of an error's text a job's error holds. */
const ERROR_TEXT_CHARS = 300;

/**
 * The start of a body, up to `chars` characters, as much of it as comes within `withinMs`; the rest
 * is not read, and the request is let go (a gateway's answer may be large, trickle, stall or never
 * end). A body that breaks gives what came of it.
 */
async function bodyStart(res: Response, chars: number, withinMs: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  // Letting go of the body ends the read waiting on it: what came is the text.
  const deadline = setTimeout(() => reader.cancel().catch(() => {}), withinMs);
  let text = "";
  try {
    for (let piece = await reader.read(); !piece.done; piece = await reader.read()) {
      text += piece.value;
      if (text.length >= chars) break;
    }
  } catch {
    // broken part-way: what came
  } finally {
    clearTimeout(deadline);
    reader.cancel().catch(() => {});
  }
  return text.slice(0, chars);
}

/**
 * What an error answer says: its JSON error's message, else the start of its text, else its status
 * text. Only what comes within `withinMs` is read.
 */
export async function errorText(res: Response, withinMs: number): Promise<string> {
  const body = await bodyStart(res, ERROR_BODY_CHARS, withinMs);
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string } | string };
    const message = typeof parsed.error === "string" ? parsed.error : parsed.error?.message;
    if (typeof message === "string" && message) return message.slice(0, ERROR_TEXT_CHARS);
  } catch {
    // not JSON: the text itself
  }
  return body.slice(0, ERROR_TEXT_CHARS) || res.statusText;
}

/** Maps a non-2xx answer (its error text read already) to a failure: retried where another try can succeed. */
export function providerError(res: Response, detail: string): Error {
  const message = `${refusalName(res.status)}: ${detail}`;
  return triedAgain(res) ? new TransientError(message, waitAsked(res)) : new StepFailed(message);
}

/** How a refusal is named in a job's error, by its status. */
function refusalName(status: number): string {
  if (status === 401 || status === 403) return `Model provider refused the credentials (${status})`;
  if (status === 429) return "Model provider rate limit (429)";
  if (retriedStatus(status)) return `Model provider error (${status})`;
  return `Model provider rejected the request (${status})`;
}

/** What OpenAI's SDKs try again: a timeout (408), a conflict (409), a rate limit (429) and a server's error (5xx). */
const retriedStatus = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;

/**
 * Whether another try may succeed, as OpenAI's SDKs judge it: as the answer says where it says so
 * (`x-should-retry: true` or `false`, which OpenAI's API sends), else by its status
 * (`retriedStatus`). A try again waits what the answer asks.
 */
function triedAgain(res: Response): boolean {
  const said = res.headers.get("x-should-retry")?.trim().toLowerCase();
  if (said === "true") return true;
  if (said === "false") return false;
  return retriedStatus(res.status);
}
