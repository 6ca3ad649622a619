/**
 * Reading an event stream (a job's events, the tenant's feed) as the service writes it: blocks of
 * `id: `, `event: ` and `data: ` lines, each block ended by a blank line.
 */

/** The blocks of an SSE body (comments, such as pings, skipped); it ends when the connection does. */
export async function* sseBlocks(body: ReadableStream<Uint8Array>): AsyncGenerator<{ id: string | null; event: string | null; data: string }> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id: string | null = null;
        let event: string | null = null;
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("id: ")) id = line.slice(4);
          else if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (id !== null || data !== "") yield { id, event, data };
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
