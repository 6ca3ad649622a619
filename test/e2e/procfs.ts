/** Resident memory, CPU time and open files of a process tree, read from /proc: what the dev server holds and spends. */
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

/** USER_HZ: the unit of the CPU times in /proc/<pid>/stat (100 on Linux). */
const CLOCK_TICKS = 100;

/** User and system CPU time of all the process's threads, in milliseconds. */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

function openFiles(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** The process and all its descendants. */
function treePids(root: number): number[] {
  const pids: number[] = [];
  const queue = [root];
  while (queue.length) {
    const pid = queue.pop()!;
    pids.push(pid);
    queue.push(...children(pid));
  }
  return pids;
}

const treeSum = (root: number, of: (pid: number) => number): number => treePids(root).reduce((total, pid) => total + of(pid), 0);

/** The process and all its descendants: each one's id, name and command line. */
export function treeProcesses(root: number): { pid: number; comm: string; cmdline: string }[] {
  return treePids(root).flatMap((pid) => {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      return [{ pid, comm, cmdline }];
    } catch {
      return []; // the process ended meanwhile
    }
  });
}

/** Summed RSS of the process and all its descendants. */
export const treeRss = (root: number): number => treeSum(root, rssBytes);

/** CPU time the process and all its descendants have used so far, in milliseconds. */
export const treeCpuMs = (root: number): number => treeSum(root, cpuMs);

/**
 * Files the process and all its descendants hold open. workerd holds each Durable Object's
 * database files open while the object is, so this falls back once the objects it has run close.
 */
export const treeOpenFiles = (root: number): number => treeSum(root, openFiles);

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
