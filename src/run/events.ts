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

export const DONE = "data: [DONE]\n\n";
export const PING = ": ping\n\n";
export const HEARTBEAT_MS = 15_000;

/** What the log holds after a position, and whether the job has ended with it. */
export interface LogTail {
  events: StoredEvent[];
  finished: boolean;
}

interface Watcher {
  controller: ReadableStreamDefaultController<Uint8Array>;
  last: number;
}

/** Live SSE clients of one job. Each is sent every event after its own position, in order. */
export class Watchers {
  private readonly watchers = new Set<Watcher>();
  private heartbeat: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly readAfter: (seq: number) => LogTail) {}

  open(after: number): ReadableStream<Uint8Array> {
    let watcher: Watcher;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        watcher = { controller, last: after };
        this.watchers.add(watcher);
        this.push(watcher);
        if (this.watchers.has(watcher)) this.startHeartbeat();
      },
      cancel: () => this.drop(watcher),
    });
  }

  /** Sends every watcher what was appended since it last heard. */
  notify(): void {
    for (const watcher of this.watchers) this.push(watcher);
  }

  /** Ends every stream: the job is gone. */
  closeAll(): void {
    for (const watcher of this.watchers) {
      this.drop(watcher);
      try {
        watcher.controller.close();
      } catch {
        // already closed by the client
      }
    }
  }

  get size(): number {
    return this.watchers.size;
  }

  private push(watcher: Watcher): void {
    const tail = this.readAfter(watcher.last);
    try {
      for (const event of tail.events) {
        watcher.controller.enqueue(encoder.encode(encodeEvent(event)));
        watcher.last = event.seq;
      }
      if (tail.finished) {
        watcher.controller.enqueue(encoder.encode(DONE));
        watcher.controller.close();
        this.drop(watcher);
      }
    } catch {
      this.drop(watcher);
    }
  }

  private drop(watcher: Watcher): void {
    this.watchers.delete(watcher);
    if (this.watchers.size === 0 && this.heartbeat !== null) {
      clearInterval(this.heartbeat);
      this.heartbeat = null;
    }
  }

  private startHeartbeat(): void {
    if (this.heartbeat !== null) return;
    this.heartbeat = setInterval(() => {
      for (const watcher of this.watchers) {
        try {
          watcher.controller.enqueue(encoder.encode(PING));
        } catch {
          this.drop(watcher);
        }
      }
    }, HEARTBEAT_MS);
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
