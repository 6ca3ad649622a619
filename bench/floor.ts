/**
 * The floor's Worker (bench/floor/), served by `wrangler dev` beside the service on 127.0.0.1:8006,
 * the one place that says where and how: `npm run bench`, `bench:soak` and `bench:profile` start it here.
 */
import { startServer, type DevServer } from "../test/e2e/server";

export const FLOOR_PORT = 8006;

/** Starts the floor on a state directory, with any further `wrangler dev` arguments (an inspector port, say). */
export function startFloor(persistTo: string | undefined, args: string[] = []): Promise<DevServer> {
  return startServer(persistTo, ["--config", "bench/floor/wrangler.jsonc", ...args], FLOOR_PORT);
}
