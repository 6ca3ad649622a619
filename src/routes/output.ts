/** Serving a job's output from R2: whole, by byte range, or headers only; never buffered. */
import type { Context } from "hono";
import { ApiError } from "../errors";
import type { Job } from "../schemas";
import { outputEtag, streamRange, type OutputPart } from "../storage/blobs";

/** The inclusive byte range a `Range` header asks for, null for the whole body, or "unsatisfiable". */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | "unsatisfiable" {
  if (header === undefined) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return null; // not a single byte range: serve it all
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const last = match[2] === "" ? null : Number(match[2]);
  // A last byte before the first is no range at all (RFC 9110 §14.1.1): the header is ignored.
  if (last !== null && last < start) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end: last === null ? size - 1 : Math.min(last, size - 1) };
}

/** The entity tags a conditional header lists, or "*" for any. */
function entityTags(header: string): "*" | string[] {
  if (header.trim() === "*") return "*";
  return [...header.matchAll(/(?:W\/)?"[^"]*"/g)].map((m) => m[0]);
}
const isWeak = (tag: string) => tag.startsWith("W/");
const opaque = (tag: string) => (isWeak(tag) ? tag.slice(2) : tag);

/** RFC 9110 §8.8.3.2: strong comparison needs both tags strong; weak comparison ignores `W/`. */
function listed(header: string, etag: string, comparison: "strong" | "weak"): boolean {
  const tags = entityTags(header);
  if (tags === "*") return true;
  return tags.some((tag) => (comparison === "weak" || !isWeak(tag)) && opaque(tag) === etag);
}

/**
 * The conditional headers of RFC 9110 §13, evaluated in its order for a representation that
 * exists and has an ETag but no modification date (a date in `If-Range` never matches, so a
 * resumed download of output that changed since, a step answered again after a person's
 * revision, gets the whole output rather than a splice of two versions).
 */
function preconditions(c: Context, etag: string): { answer: "412" | "304" | null; range: string | undefined } {
  const ifMatch = c.req.header("If-Match");
  if (ifMatch !== undefined && !listed(ifMatch, etag, "strong")) return { answer: "412", range: undefined };
  const ifNoneMatch = c.req.header("If-None-Match");
  if (ifNoneMatch !== undefined && listed(ifNoneMatch, etag, "weak")) return { answer: "304", range: undefined };
  const ifRange = c.req.header("If-Range");
  const range = ifRange === undefined || ifRange.trim() === etag ? c.req.header("Range") : undefined;
  return { answer: null, range };
}

export async function serveOutput(c: Context, job: Job, parts: OutputPart[]): Promise<Response> {
  const size = parts.reduce((sum, p) => sum + p.bytes, 0);
  const etag = await outputEtag(parts);
  const headers = new Headers({
    "Content-Type": "text/plain; charset=utf-8",
    "Accept-Ranges": "bytes",
    ETag: etag,
    "X-Run-Status": job.status,
    // Byte ranges and Content-Length refer to the stored bytes: the edge must not re-encode them.
    "Cache-Control": "no-transform",
    "Content-Encoding": "identity",
  });
  const conditional = preconditions(c, etag);
  if (conditional.answer === "412") {
    throw new ApiError("precondition_failed", `Precondition failed: the output's ETag is ${etag}`, {}, { ETag: etag });
  }
  if (conditional.answer === "304") return new Response(null, { status: 304, headers });

  const range = parseRange(conditional.range, size);
  if (range === "unsatisfiable") {
    throw new ApiError("range_not_satisfiable", `Range not satisfiable: output is ${size} bytes`, {}, {
      "Content-Range": `bytes */${size}`,
    });
  }
  const { start, end } = range ?? { start: 0, end: size - 1 };
  const length = end - start + 1;
  headers.set("Content-Length", String(length));
  if (range) headers.set("Content-Range", `bytes ${start}-${end}/${size}`);
  const status = range ? 206 : 200;
  if (c.req.method === "HEAD" || length === 0) return new Response(null, { status, headers });

  const { readable, writable } = new FixedLengthStream(length);
  void streamRange(c.env.OUTPUTS, parts, start, end).pipeTo(writable).catch(() => {});
  return new Response(readable, { status, headers });
}
