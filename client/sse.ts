/**
 * Reading an event stream (a job's events, the tenant's feed) as the event-stream format defines
 * it, not only as this service writes it: lines end in CRLF, LF or CR; a field's value follows its
 * colon with one optional space; a block's `data` lines are joined with newlines; a line that
 * starts with a colon is a comment (a ping). So a stream that comes through a proxy or a gateway
 * that writes it another way is read the same.
 */

export interface SseBlock {
  id: string | null;
  event: string | null;
  data: string;
}

/** The blocks of an event stream (comments skipped); it ends when the connection does. */
export async function* sseBlocks(body: ReadableStream<Uint8Array>): AsyncGenerator<SseBlock> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const block = new BlockReader();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let end: RegExpExecArray | null;
      while ((end = LINE_END.exec(buffer)) !== null) {
        // A CR that ends the text read so far may be the first half of a CRLF: wait for more.
        if (!done && end[0] === "\r" && end.index === buffer.length - 1) break;
        const line = buffer.slice(0, end.index);
        buffer = buffer.slice(end.index + end[0].length);
        const complete = block.line(line);
        if (complete) yield complete;
      }
      // What follows the last line's end is a line cut short, and a block never ended: dropped.
      if (done) return;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

const LINE_END = /\r\n|\r|\n/;

/** One block's fields, line by line; a blank line ends it. */
class BlockReader {
  private id: string | null = null;
  private event: string | null = null;
  private data: string[] = [];

  /** Takes one line; answers the block it ended, if it was blank and the block holds anything. */
  line(line: string): SseBlock | null {
    if (line === "") return this.end();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }

  private end(): SseBlock | null {
    const block = { id: this.id, event: this.event, data: this.data.join("\n") };
    this.id = null;
    this.event = null;
    this.data = [];
    return block.id !== null || block.data !== "" ? block : null;
  }
}
