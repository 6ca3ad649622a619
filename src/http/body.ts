/** Reading a JSON request body safely: content type, size limit (also when chunked), well-formed JSON. */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "../errors";

const JSON_TYPE = /^application\/([\w.-]+\+)?json$/i;

async function readLimited(request: Request, maxBytes: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  const tooLarge = () => new ApiError("payload_too_large", `Request body is larger than ${maxBytes} bytes`);
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge();
  if (!request.body) return new Uint8Array();
  // A declared length within the limit is what the runtime reads, no more: read it whole.
  if (declared !== null) return new Uint8Array(await request.arrayBuffer());
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

export const MAX_JSON_DEPTH = 32;

/** How deeply arrays and objects nest in JSON text, counted without parsing it. */
export function jsonDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 92) i++; // backslash: skip the escaped character
      else if (ch === 34) inString = false;
    } else if (ch === 34) inString = true;
    else if (ch === 123 || ch === 91) deepest = Math.max(deepest, ++depth);
    else if (ch === 125 || ch === 93) depth--;
  }
  return deepest;
}

/**
 * Admits only a JSON body within `maxBytes`, then hands its text and its parsed value to Hono's
 * body cache, where the route's validator (`valid` in validation.ts) takes the parsed value.
 * A body that names no content type is read as JSON, as FastAPI reads it (Python's
 * `requests.post(url, data=json.dumps(body))` names none). With `optional`, a request without a
 * body (none, or a `Content-Length` of 0) stands for `{}` whatever content type it names (a
 * client may send `Content-Type: application/json` on every request), as does an empty body sent
 * in chunks as JSON.
 */
export function jsonBody(maxBytes: (env: Env) => number, options: { optional?: boolean } = {}): MiddlewareHandler<{ Bindings: Env }> {
  return async (c, next) => {
    const mediaType = (c.req.header("content-type") ?? "").split(";")[0].trim();
    const json = mediaType === "" || JSON_TYPE.test(mediaType);
    const bodiless = c.req.header("content-length") === "0" || c.req.raw.body === null;
    if (!(options.optional && bodiless) && !json) throw new ApiError("bad_request", "Content-Type must be application/json");
    const bytes = bodiless ? new Uint8Array() : await readLimited(c.req.raw, maxBytes(c.env));
    if (options.optional && bytes.length === 0) {
      cacheBody(c.req.bodyCache, "{}", {});
      return next();
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
    } catch {
      throw new ApiError("bad_request", "Request body is not valid UTF-8");
    }
    if (jsonDepth(text) > MAX_JSON_DEPTH) {
      throw new ApiError("bad_request", `JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ApiError("bad_request", "Malformed JSON in request body");
    }
    cacheBody(c.req.bodyCache, text, parsed);
    await next();
  };
}

/** Hands a body's text and parsed value to Hono's body cache, where its validator reads them. */
function cacheBody(bodyCache: object, text: string, parsed: unknown): void {
  const cache = bodyCache as Record<string, Promise<unknown>>;
  cache.text = Promise.resolve(text);
  cache.json = Promise.resolve(parsed);
}
