/** Resident memory of a process tree, read from /proc: how much the dev server holds. */
import { readdirSync, readFileSync } from "node:fs";

function children(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // the process ended meanwhile
    }
  }
  return out;
}

function rssBytes(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Summed RSS of the process and all its descendants. */
export function treeRss(root: number): number {
  let total = 0;
  const queue = [root];
  while (queue.length) {
    const pid = queue.pop()!;
    total += rssBytes(pid);
    queue.push(...children(pid));
  }
  return total;
}

/** Samples the tree's RSS while `work` runs; returns the work's value and the peak seen. */
export async function peakRssDuring<T>(root: number, work: () => Promise<T>): Promise<{ value: T; peak: number }> {
  let peak = treeRss(root);
  const timer = setInterval(() => (peak = Math.max(peak, treeRss(root))), 25);
  try {
    const value = await work();
    return { value, peak: Math.max(peak, treeRss(root)) };
  } finally {
    clearInterval(timer);
  }
}
