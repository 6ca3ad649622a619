/**
 * A Server-Sent Events answer: neither cached nor buffered on the way. A HEAD request gets the
 * headers alone, and its route opens no stream: a stream opened and never read would hold a
 * watcher in the object that serves it (a job's, or the tenant's projection for the feed).
 */
export function eventStream(body: ReadableStream<Uint8Array> | null, endsAt?: number): Response {
  return new Response(body && endsAt !== undefined ? endingAt(body, endsAt) : body, {
    headers: { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no" },
  });
}

/**
 * Where a stream resumes: after `Last-Event-ID`, which an EventSource sends with every
 * reconnection, over `?after=`, which stays in the address it reconnects to (an address that
 * carries it is a page resuming where it left off; the header then says how far it has come since).
 */
export function resumeAfter(header: string | undefined, after: string | undefined): string | undefined {
  return header ?? after;
}

/**
 * The stream, closed at `endsAt` (ms since the epoch) if it has not ended by then, its source
 * cancelled (the object's watcher goes). A stream opened with a scoped token lasts no longer than
 * the token: the feed never ends by itself, and a job's stream may wait days for a person. The
 * client's EventSource then comes back, and is told that the token expired.
 */
function endingAt(body: ReadableStream<Uint8Array>, endsAt: number): ReadableStream<Uint8Array> {
  const source = body.getReader();
  let expiry: ReturnType<typeof setTimeout> | null = null;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      expiry = setTimeout(() => {
        // A read waiting on the source ends now (the queue is empty), not when the source next sends.
        controller.close();
        source.cancel("The token expired").catch(() => {});
      }, Math.max(0, endsAt - Date.now()));
    },
    async pull(controller) {
      try {
        const chunk = await source.read();
        if (chunk.done) {
          clearTimeout(expiry);
          controller.close();
        } else controller.enqueue(chunk.value);
      } catch (error) {
        // Closed at the expiry meanwhile: nothing is owed. Else the source broke: so does this.
        clearTimeout(expiry);
        try {
          controller.error(error);
        } catch {
          // closed already
        }
      }
    },
    cancel(reason) {
      clearTimeout(expiry);
      return source.cancel(reason);
    },
  });
}
