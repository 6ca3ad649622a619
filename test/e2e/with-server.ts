/** A `wrangler dev` of the service for the calling file's tests. */
import { afterAll, beforeAll } from "vitest";
import { startServer, stopServer, type DevServer } from "./server";

/** Before the calling file's tests, starts `wrangler dev` of the service on BASE (with startServer's arguments); after them, stops it. */
export function withServer(...args: Parameters<typeof startServer>): void {
  let server: DevServer | undefined;
  beforeAll(async () => {
    server = await startServer(...args);
  });
  afterAll(async () => {
    if (server) await stopServer(server);
  });
}
