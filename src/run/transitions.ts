/** The job status machine, as one table. Everything that changes a job's status asks it. */
export const STATUSES = ["queued", "running", "awaiting_input", "succeeded", "failed", "cancelled"] as const;
export type Status = (typeof STATUSES)[number];

export const ACTIONS = ["start", "succeed", "fail", "cancel", "expire", "ask", "answer"] as const;
export type Action = (typeof ACTIONS)[number];

const TABLE: Record<Status, Partial<Record<Action, Status>>> = {
  // A queued job whose queue TTL passed before it started fails.
  queued: { start: "running", cancel: "cancelled", expire: "failed" },
  running: { succeed: "succeeded", fail: "failed", cancel: "cancelled", ask: "awaiting_input" },
  // A job that asked a person for input holds no run slot; answered, it waits for one again
  // (queued, ahead of jobs not yet started), or ends: rejected or unanswered (fail), cancelled.
  awaiting_input: { answer: "queued", fail: "failed", cancel: "cancelled" },
  succeeded: {},
  failed: {},
  cancelled: {},
};

/** The status that `action` leads to from `from`, or null when the table forbids it. */
export function transition(from: Status, action: Action): Status | null {
  return TABLE[from][action] ?? null;
}

export function isTerminal(status: Status): boolean {
  return ACTIONS.every((action) => transition(status, action) === null);
}

export function isStatus(value: string): value is Status {
  return (STATUSES as readonly string[]).includes(value);
}
