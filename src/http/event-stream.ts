/**
 * Reading an event stream as the event-stream format defines it, not only as this service writes
 * it: lines end in CRLF, LF or CR; a field's value follows its colon with one optional space; a
 * block's `data` lines are joined with newlines; a line that starts with a colon is a comment (a
 * ping). So a stream that comes through a proxy or a gateway that writes it another way is read
 * the same. The client reads this service's streams with it, and the model runner a provider's.
 */

export interface SseBlock {
  id: string | null;
  event: string | null;
  data: string;
}

/** The blocks of an event stream, from its text as it comes, piece by piece. */
export class EventStreamReader {
  private rest = "";
  private readonly block = new BlockReader();
  private readonly lineEnd = /\r\n|\r|\n/g;

  /**
   * The blocks that `text` completes (comments skipped). `ended`: the stream ends with it; what
   * follows its last line's end is then a line cut short, and a block never ended: both dropped.
   */
  push(text: string, ended = false): SseBlock[] {
    const buffer = this.rest + text;
    const blocks: SseBlock[] = [];
    let start = 0;
    this.lineEnd.lastIndex = 0;
    for (let end = this.lineEnd.exec(buffer); end !== null; end = this.lineEnd.exec(buffer)) {
      // A CR that ends the text so far may be the first half of a CRLF: wait for more.
      if (!ended && end[0] === "\r" && end.index === buffer.length - 1) break;
      const complete = this.block.line(buffer.slice(start, end.index));
      start = end.index + end[0].length;
      if (complete) blocks.push(complete);
    }
    this.rest = ended ? "" : buffer.slice(start);
    return blocks;
  }
}

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
