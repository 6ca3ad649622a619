/**
 * The tenant's live feed: its change log as Server-Sent Events, for any number of watchers. The
 * log is written by the projection as the jobs' outboxes feed it; a watcher only reads it, so it
 * never costs a job anything.
 */
import type { Job } from "../schemas";
import type { Status } from "../run/transitions";
import { OpenStreams } from "../run/events";

/** What a list or a feed is narrowed to. */
export interface RunFilter {
  status?: Status;
  session_id?: string;
  /** Jobs carrying every one of these tags. */
  tags?: string[];
  /** Jobs whose metadata holds each of these entries exactly. */
  metadata?: Record<string, string>;
  /** Matches no job: what a token's reach leaves of a filter asking outside it. */
  nothing?: true;
}

/** One change of the log: a job's new snapshot (`run`), or its deletion (`deleted`, with its last snapshot). */
export type Change = {
  id: number;
  kind: "run" | "deleted";
  previous_status: Status | null;
  job: string;
};

/** Changes read from the log at a time while a watcher catches up. */
const CATCH_UP_BATCH = 200;
/** A watcher this many events behind what it has read is let go; it resumes with Last-Event-ID. */
export const MAX_BEHIND = 5_000;

/**
 * Does a change concern the filter? A job that matched before this change and no longer does
 * (it left the status watched) is told too, so that a view can drop it.
 */
export function concerns(filter: RunFilter, change: Change, job: Job): boolean {
  if (filter.nothing) return false;
  if (filter.status !== undefined && job.status !== filter.status && change.previous_status !== filter.status) return false;
  if (filter.session_id !== undefined && job.session_id !== filter.session_id) return false;
  for (const tag of filter.tags ?? []) if (!(job.tags ?? []).includes(tag)) return false;
  for (const [key, value] of Object.entries(filter.metadata ?? {})) if (job.metadata?.[key] !== value) return false;
  return true;
}

function encode(change: Change, job: Job): string {
  return change.kind === "deleted"
    ? `id: ${change.id}\nevent: deleted\ndata: ${JSON.stringify({ job_id: job.job_id })}\n\n`
    : `id: ${change.id}\nevent: run\ndata: ${change.job}\n\n`;
}

const encoder = new TextEncoder();

interface Watcher {
  controller: ReadableStreamDefaultController<Uint8Array>;
  filter: RunFilter;
  /** The last change it was sent (or passed over). */
  last: number;
  /** Caught up: new changes are pushed to it as they are written. */
  live: boolean;
}

/** The feed's watchers of one tenant. */
export class FeedWatchers {
  private readonly watchers = new OpenStreams<Watcher>();

  /** `readAfter(id, n)`: up to n changes after id, oldest first. */
  constructor(private readonly readAfter: (id: number, limit: number) => Change[]) {}

  /**
   * A watcher from `after` (the changes after it, then live), or from `now` when it gives no
   * position. `reset`: its position is older than the log keeps, so it is told to list again and
   * goes on from `now`.
   */
  open(filter: RunFilter, after: number, reset: boolean, now: number): ReadableStream<Uint8Array> {
    let watcher: Watcher;
    return new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          watcher = { controller, filter, last: after, live: false };
          if (reset) controller.enqueue(encoder.encode(`id: ${now}\nevent: reset\ndata: {}\n\n`));
          this.watchers.add(watcher);
        },
        // While it catches up, the watcher reads a batch each time its client takes what it was sent.
        pull: () => {
          this.watchers.taken(watcher);
          if (!watcher.live) this.catchUp(watcher);
        },
        cancel: () => this.watchers.drop(watcher),
      },
      { highWaterMark: 1 },
    );
  }

  /** Tells the live watchers the changes just written. */
  notify(changes: Change[]): void {
    const parsed = changes.map((change) => ({ change, job: JSON.parse(change.job) as Job }));
    for (const watcher of this.watchers) {
      if (!watcher.live) continue;
      for (const { change, job } of parsed) if (change.id > watcher.last) this.send(watcher, change, job);
      if ((watcher.controller.desiredSize ?? 0) < -MAX_BEHIND) this.watchers.close(watcher);
    }
  }

  get size(): number {
    return this.watchers.size;
  }

  private catchUp(watcher: Watcher): void {
    const batch = this.readAfter(watcher.last, CATCH_UP_BATCH);
    for (const change of batch) this.send(watcher, change, JSON.parse(change.job) as Job);
    // Read and marked in one synchronous turn: nothing written meanwhile can slip between.
    if (batch.length < CATCH_UP_BATCH) watcher.live = true;
  }

  private send(watcher: Watcher, change: Change, job: Job): void {
    watcher.last = change.id;
    if (!concerns(watcher.filter, change, job)) return;
    try {
      watcher.controller.enqueue(encoder.encode(encode(change, job)));
    } catch {
      this.watchers.drop(watcher);
    }
  }
}
