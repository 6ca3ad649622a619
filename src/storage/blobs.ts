/**
 * R2 layout of job outputs: `runs/<tenant>/<job_id>/steps/<n>`, one object per finished step.
 * The job's output is those objects in step order; nothing is ever assembled whole in memory.
 */
import { hex, sha256 } from "../digest";
import type { StepOutput } from "../runners/types";

export interface OutputPart {
  key: string;
  bytes: number;
  etag: string;
}

/** The trailing slash matters: purging `run_1/` must never touch `run_10/`. */
export function outputPrefix(tenant: string, jobId: string): string {
  return `runs/${tenant}/${jobId}/`;
}

export function partKey(prefix: string, stepIndex: number): string {
  return `${prefix}steps/${String(stepIndex).padStart(4, "0")}`;
}

export const HEAD_BYTES = 64 * 1024;

export interface WrittenPart extends OutputPart {
  /** The part's first bytes (all of it when it is at most HEAD_BYTES), for the event log. */
  head: Uint8Array;
}

/** Streams a step's output into R2 with its known length, keeping only its first bytes. */
export async function writePart(bucket: R2Bucket, key: string, output: StepOutput): Promise<WrittenPart> {
  const { readable, writable } = new FixedLengthStream(output.bytes);
  const put = bucket.put(key, readable, { httpMetadata: { contentType: "text/plain; charset=utf-8" } });
  // If the upload fails early, nobody reads the stream any more: writes must not wait on it forever.
  const putFailed = put.then(
    () => new Promise<never>(() => {}),
    (error) => Promise.reject(error),
  );
  putFailed.catch(() => {});
  const head = new Uint8Array(Math.min(HEAD_BYTES, output.bytes));
  let filled = 0;
  const writer = writable.getWriter();
  const reader = output.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled < head.length) {
        const take = value.subarray(0, head.length - filled);
        head.set(take, filled);
        filled += take.length;
      }
      await Promise.race([writer.write(value), putFailed]);
    }
    await Promise.race([writer.close(), putFailed]);
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    await writer.abort(error).catch(() => {});
    await put.catch(() => {});
    throw error;
  }
  const object = await put;
  return { key, bytes: output.bytes, etag: object.etag, head };
}

/**
 * Copies one part to `key`, streamed through a stream of the part's known length: never held
 * whole in memory, whatever its size. Throws when the part is gone.
 */
export async function copyPart(bucket: R2Bucket, part: OutputPart, key: string): Promise<OutputPart> {
  const source = await bucket.get(part.key);
  if (!source) throw new Error(`output part missing: ${part.key}`);
  const { readable, writable } = new FixedLengthStream(source.size);
  const [, copy] = await Promise.all([source.body.pipeTo(writable), bucket.put(key, readable, { httpMetadata: source.httpMetadata })]);
  return { key, bytes: source.size, etag: copy.etag };
}

/** Deletes every object under the prefix, page by page. Idempotent. */
export async function purgePrefix(bucket: R2Bucket, prefix: string): Promise<number> {
  let removed = 0;
  for (;;) {
    const page = await bucket.list({ prefix, limit: 1000 });
    if (page.objects.length === 0) return removed;
    await bucket.delete(page.objects.map((o) => o.key));
    removed += page.objects.length;
    if (!page.truncated) return removed;
  }
}

/** The whole output as text: only for outputs already known to be within the inline limit. */
export async function readText(bucket: R2Bucket, parts: OutputPart[]): Promise<string> {
  const texts = await Promise.all(
    parts.map(async (part) => {
      const object = await bucket.get(part.key);
      if (!object) throw new Error(`output part missing: ${part.key}`);
      return object.text();
    }),
  );
  return texts.join("");
}

/** The output as text when it is at most `limit` bytes; null when it is larger. */
export async function inlineResult(bucket: R2Bucket, parts: OutputPart[], limit: number): Promise<string | null> {
  const bytes = parts.reduce((sum, p) => sum + p.bytes, 0);
  return bytes <= limit ? readText(bucket, parts) : null;
}

/** The bytes [start, end] (inclusive) of the parts taken as one blob, streamed part by part. */
export function streamRange(bucket: R2Bucket, parts: OutputPart[], start: number, end: number): ReadableStream<Uint8Array> {
  const slices: { key: string; offset: number; length: number }[] = [];
  let base = 0;
  for (const part of parts) {
    const from = Math.max(start, base);
    const to = Math.min(end, base + part.bytes - 1);
    if (from <= to) slices.push({ key: part.key, offset: from - base, length: to - from + 1 });
    base += part.bytes;
  }
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  let next = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          if (!reader) {
            const slice = slices[next++];
            if (!slice) return controller.close();
            const object = await bucket.get(slice.key, { range: { offset: slice.offset, length: slice.length } });
            if (!object) return controller.error(new Error(`output part missing: ${slice.key}`));
            reader = object.body.getReader();
          }
          const { done, value } = await reader.read();
          if (done) {
            reader = null;
            continue;
          }
          return controller.enqueue(value);
        }
      },
      async cancel(reason) {
        await reader?.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** A strong ETag for the output: it changes whenever any part does. */
export async function outputEtag(parts: OutputPart[]): Promise<string> {
  const text = parts.map((p) => `${p.key}:${p.bytes}:${p.etag}`).join("\n");
  return `"${hex((await sha256(text)).subarray(0, 16))}"`;
}
