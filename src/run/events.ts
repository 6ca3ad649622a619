/** The job's event log as Server-Sent Events, and the set of clients watching it live. */

export const EVENT_TYPES = ["progress", "log", "output", "input_required", "complete"] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface NewEvent {
  type: EventType;
  data: Record<string, unknown>;
}

export interface StoredEvent {
  seq: number;
  type: string;
  data: string;
}

const encoder = new TextEncoder();

/**
 * One event in PraisonAI's format (a `data:` line holding `{"event", "data"}`), with the
 * `id:` and `event:` lines that let EventSource clients resume; old clients ignore them.
 */
export function encodeEvent(event: StoredEvent): string {
  return `id: ${event.seq}\nevent: ${event.type}\ndata: {"event":${JSON.stringify(event.type)},"data":${event.data}}\n\n`;
}

/**
 * One event of the named format (`?format=named`), for browsers' EventSource: `event: <type>`
 * with the bare payload. A log line that marks a status change is sent as a `status` event before
 * it; `complete` is sent as the final `status` (its `result` follows when the stream ends).
 * Event types the format does not name are left out; the `id:` lines are the log's own.
 */
export function encodeNamed(event: StoredEvent, jobId: string): string {
  const data = JSON.parse(event.data) as Record<string, unknown>;
  const status = (value: unknown) => `event: status\ndata: ${JSON.stringify({ status: value, job_id: jobId })}\n\n`;
  switch (event.type) {
    case "complete":
      return `id: ${event.seq}\n${status(data.status)}`;
    case "log":
      return `${data.status === undefined ? "" : status(data.status)}id: ${event.seq}\nevent: log\ndata: ${JSON.stringify({ message: data.message })}\n\n`;
    case "progress":
      return `id: ${event.seq}\nevent: progress\ndata: ${JSON.stringify({ percentage: data.percentage, step: data.step ?? null, current_step: data.current_step })}\n\n`;
    case "output":
    case "input_required":
      return `id: ${event.seq}\nevent: ${event.type}\ndata: ${event.data}\n\n`;
    default:
      return "";
  }
}

/** The named format's last event: the job's end, its result inline (up to 16 KiB) or null. */
export interface NamedResult {
  status: string;
  result: string | null;
  result_url: string;
  error: string | null;
}

export const DONE = "data: [DONE]\n\n";
export const PING = ": ping\n\n";
export const HEARTBEAT_MS = 15_000;

/** What the log holds after a position, and whether the job has ended with it. */
export interface LogTail {
  events: StoredEvent[];
  finished: boolean;
}

/** How a watcher's stream is written: PraisonAI's format, or the named one (with how to end it). */
export type StreamFormat = { kind: "default" } | { kind: "named"; jobId: string; result: () => Promise<NamedResult> };

interface Watcher {
  controller: ReadableStreamDefaultController<Uint8Array>;
  last: number;
  format: StreamFormat;
}

/** What an open stream's heartbeats know of its client. */
interface Client {
  /** When it last took everything it had been sent (the stream's `pull`). */
  takenAt: number;
  /** The heartbeat that found it holding something unread, if it has taken nothing since. */
  behindSince: number | null;
}

/**
 * An object's open SSE streams: while there are any, each is sent `: ping` every HEARTBEAT_MS.
 * A client that went away is let go by the heartbeats: the runtime does not tell a Durable
 * Object's stream that the Worker reading it was cancelled (its `cancel` never runs), so the
 * stream would be written on for good. One found holding something unread at a heartbeat, and
 * still at the next with nothing taken between, is closed: a client still there gets what was
 * queued, then its stream ends, and it resumes from its last event.
 */
export class OpenStreams<W extends { controller: ReadableStreamDefaultController<Uint8Array> }> implements Iterable<W> {
  private readonly open = new Map<W, Client>();
  private heartbeat: ReturnType<typeof setInterval> | null = null;

  add(stream: W): void {
    this.open.set(stream, { takenAt: Date.now(), behindSince: null });
    this.heartbeat ??= setInterval(() => this.beat(), HEARTBEAT_MS);
  }

  /** The stream's client took everything it was sent (call it from the stream's `pull`). */
  taken(stream: W): void {
    const client = this.open.get(stream);
    if (client) client.takenAt = Date.now();
  }

  /** One heartbeat: clients gone are let go, the others are sent a ping. */
  beat(): void {
    const now = Date.now();
    for (const [each, client] of this.open) {
      if ((each.controller.desiredSize ?? 0) > 0) client.behindSince = null;
      else if (client.behindSince === null || client.takenAt >= client.behindSince) client.behindSince = now;
      else {
        this.close(each);
        continue;
      }
      try {
        each.controller.enqueue(encoder.encode(PING));
      } catch {
        this.drop(each);
      }
    }
  }

  drop(stream: W): void {
    this.open.delete(stream);
    if (this.open.size === 0 && this.heartbeat !== null) {
      clearInterval(this.heartbeat);
      this.heartbeat = null;
    }
  }

  /** Ends the stream after what it holds, and stops writing to it. */
  close(stream: W): void {
    this.drop(stream);
    try {
      stream.controller.close();
    } catch {
      // the client has gone
    }
  }

  get size(): number {
    return this.open.size;
  }

  [Symbol.iterator](): Iterator<W> {
    return this.open.keys();
  }
}

/** Live SSE clients of one job. Each is sent every event after its own position, in order. */
export class Watchers {
  private readonly watchers = new OpenStreams<Watcher>();

  constructor(private readonly readAfter: (seq: number) => LogTail) {}

  open(after: number, format: StreamFormat = { kind: "default" }): ReadableStream<Uint8Array> {
    let watcher: Watcher;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        watcher = { controller, last: after, format };
        this.watchers.add(watcher);
        this.push(watcher);
      },
      pull: () => this.watchers.taken(watcher),
      cancel: () => this.watchers.drop(watcher),
    });
  }

  /** Sends every watcher what was appended since it last heard. */
  notify(): void {
    for (const watcher of this.watchers) this.push(watcher);
  }

  /** Ends every stream: the job is gone. */
  closeAll(): void {
    for (const watcher of this.watchers) this.watchers.close(watcher);
  }

  get size(): number {
    return this.watchers.size;
  }

  private push(watcher: Watcher): void {
    const tail = this.readAfter(watcher.last);
    try {
      const format = watcher.format;
      for (const event of tail.events) {
        const text = format.kind === "named" ? encodeNamed(event, format.jobId) : encodeEvent(event);
        if (text) watcher.controller.enqueue(encoder.encode(text));
        watcher.last = event.seq;
      }
      if (tail.finished) {
        this.watchers.drop(watcher);
        if (format.kind === "named") void this.endNamed(watcher, format);
        else {
          watcher.controller.enqueue(encoder.encode(DONE));
          watcher.controller.close();
        }
      }
    } catch {
      this.watchers.drop(watcher);
    }
  }

  /** The named format ends with the job's `result`, then closes: no `[DONE]` line. */
  private async endNamed(watcher: Watcher, format: Extract<StreamFormat, { kind: "named" }>): Promise<void> {
    try {
      const result = await format.result();
      watcher.controller.enqueue(encoder.encode(`event: result\ndata: ${JSON.stringify(result)}\n\n`));
      watcher.controller.close();
    } catch (error) {
      try {
        watcher.controller.error(error);
      } catch {
        // the client has gone
      }
    }
  }
}

export const OUTPUT_FLUSH_MS = 250;
export const OUTPUT_EVENT_MAX_CHARS = 16 * 1024;

/**
 * Gathers output deltas (a model streams one per token) into `output` events: at most one every
 * OUTPUT_FLUSH_MS, none held longer than that, none over OUTPUT_EVENT_MAX_CHARS.
 */
export class OutputCoalescer {
  private buffer = "";
  private lastFlush = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly emit: (delta: string) => void) {}

  add(text: string): void {
    this.buffer += text;
    if (this.buffer.length >= OUTPUT_EVENT_MAX_CHARS || Date.now() - this.lastFlush >= OUTPUT_FLUSH_MS) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), OUTPUT_FLUSH_MS);
  }

  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    while (this.buffer.length > 0) {
      const delta = this.buffer.slice(0, OUTPUT_EVENT_MAX_CHARS);
      this.buffer = this.buffer.slice(delta.length);
      this.emit(delta);
    }
    this.lastFlush = Date.now();
  }

  /** Drops what is left unsent: the step ended without producing it as output. */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.buffer = "";
  }
}
