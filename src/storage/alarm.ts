/**
 * An object's one alarm, shared by every kind of work it has due. It rings ALARM_DELAY_MS after
 * the work is due (`delayMs`: 0 in a deployment; the tests' own binding puts every alarm an hour
 * late, to be run by hand), and never for a time already past.
 */

/** When the alarm rings for work due at `at`. */
export const ringTime = (at: number, delayMs: number, now = Date.now()): number => Math.max(now, at) + delayMs;

/** Brings the alarm forward to ring for work due at `at`, never back, so that what is due sooner is never put off. */
export async function ringBy(storage: DurableObjectStorage, at: number, delayMs: number): Promise<void> {
  const due = ringTime(at, delayMs);
  const set = await storage.getAlarm();
  if (set === null || set > due) await storage.setAlarm(due);
}
