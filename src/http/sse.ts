/**
 * A Server-Sent Events answer: neither cached nor buffered on the way. A HEAD request gets the
 * headers alone, and its route opens no stream: a stream opened and never read would hold a
 * watcher in the object that serves it (a job's, or the tenant's projection for the feed).
 */
export function eventStream(body: ReadableStream<Uint8Array> | null): Response {
  return new Response(body, {
    headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no" },
  });
}
