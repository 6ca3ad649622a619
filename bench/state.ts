/**
 * Where a bench's servers keep their state. BENCH_MEMORY=1: in memory (/dev/shm), not on disk. On
 * disk, each request's SQLite writes wait for the file system, and a figure measures the disk as
 * much as the code; in memory, the CPU bounds every figure, and a ratio says what the code costs.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const IN_MEMORY = process.env.BENCH_MEMORY === "1";

const made: string[] = [];

/** A fresh state directory for one server. */
export function stateDir(name: string): string {
  const dir = mkdtempSync(join(IN_MEMORY ? "/dev/shm" : tmpdir(), `runs-${name}-`));
  made.push(dir);
  return dir;
}

/** Removes the directories made in memory; those on disk are kept, for BENCH_STATE to reuse. */
export function releaseStateDirs(): void {
  if (IN_MEMORY) for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
}
