/** A dev server's processes, as the benches that look below JavaScript need them. */
import { treeProcesses } from "../test/e2e/procfs";
import type { DevServer } from "../test/e2e/server";

/**
 * A dev server's two workerd processes: the one that runs the Worker and its objects (started
 * with an inspector), and the proxy in front of it.
 */
export function workerdOf(server: DevServer): { runtime: number; proxy: number } {
  const workerds = treeProcesses(server.process.pid!).filter((p) => p.comm === "workerd");
  const runtime = workerds.find((p) => p.cmdline.includes("--inspect"));
  const proxy = workerds.find((p) => !p.cmdline.includes("--inspect"));
  if (!runtime || !proxy) throw new Error("the dev server's two workerd processes were not found");
  return { runtime: runtime.pid, proxy: proxy.pid };
}
