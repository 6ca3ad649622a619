/**
 * An object's one alarm, shared by every kind of work it has due: each brings it forward to its
 * own time, never back, so that what is due sooner is never put off.
 */
export async function ringBy(storage: DurableObjectStorage, at: number): Promise<void> {
  const set = await storage.getAlarm();
  if (set === null || set > at) await storage.setAlarm(at);
}
