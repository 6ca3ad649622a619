/**
 * Reading an event stream (a job's events, the tenant's feed) from a response's body, as the
 * event-stream format defines it, not only as this service writes it (`EventStreamReader`).
 */
import { EventStreamReader, type SseBlock } from "../src/http/event-stream";

export type { SseBlock };

/**
 * The blocks of an event stream (comments skipped); it ends when the connection does. `heard` is
 * called at each piece that comes, a comment (a heartbeat) too.
 */
export async function* sseBlocks(body: ReadableStream<Uint8Array>, heard: () => void): AsyncGenerator<SseBlock> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const events = new EventStreamReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      heard();
      yield* events.push(done ? decoder.decode() : decoder.decode(value, { stream: true }), done);
      if (done) return;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
