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
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { start, end };
}

export async function serveOutput(c: Context, job: Job, parts: OutputPart[]): Promise<Response> {
  const size = parts.reduce((sum, p) => sum + p.bytes, 0);
  const headers = new Headers({
    "Content-Type": "text/plain; charset=utf-8",
    "Accept-Ranges": "bytes",
    ETag: await outputEtag(parts),
    "X-Run-Status": job.status,
    // Byte ranges and Content-Length refer to the stored bytes: the edge must not re-encode them.
    "Cache-Control": "no-transform",
    "Content-Encoding": "identity",
  });
  if (c.req.header("If-None-Match") === headers.get("ETag")) return new Response(null, { status: 304, headers });

  const range = parseRange(c.req.header("Range"), size);
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
