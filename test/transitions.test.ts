import { describe, expect, it } from "vitest";
import { ACTIONS, isTerminal, STATUSES, transition, type Action, type Status } from "../src/run/transitions";

// The whole table, written out: every (status, action) pair and what it must lead to.
const none = { start: null, succeed: null, fail: null, cancel: null, expire: null, ask: null, answer: null };
const EXPECTED: Record<Status, Record<Action, Status | null>> = {
  queued: { ...none, start: "running", cancel: "cancelled", expire: "failed" },
  running: { ...none, succeed: "succeeded", fail: "failed", cancel: "cancelled", ask: "awaiting_input" },
  awaiting_input: { ...none, answer: "queued", fail: "failed", cancel: "cancelled" },
  succeeded: none,
  failed: none,
  cancelled: none,
};

describe("status machine", () => {
  for (const from of STATUSES) {
    for (const action of ACTIONS) {
      it(`${from} --${action}--> ${EXPECTED[from][action] ?? "forbidden"}`, () => {
        expect(transition(from, action)).toBe(EXPECTED[from][action]);
      });
    }
  }

  it("terminal statuses are exactly succeeded, failed and cancelled", () => {
    expect(STATUSES.filter(isTerminal)).toEqual(["succeeded", "failed", "cancelled"]);
  });

  it("nothing leaves a terminal status, and every path from queued ends in one", () => {
    const reachable = new Set<Status>(["queued"]);
    for (let changed = true; changed; ) {
      changed = false;
      for (const from of [...reachable]) {
        for (const action of ACTIONS) {
          const to = transition(from, action);
          if (to && !reachable.has(to)) {
            reachable.add(to);
            changed = true;
          }
        }
      }
    }
    expect([...reachable].sort()).toEqual([...STATUSES].sort());
  });
});
