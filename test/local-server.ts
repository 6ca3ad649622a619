/** A Node HTTP server on a loopback port for the life of a vitest project (its globalSetup). */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

export function loopbackServer(port: number, handle: (req: IncomingMessage, res: ServerResponse) => Promise<unknown>) {
  let server: Server;
  return {
    async setup() {
      server = createServer((req, res) => {
        handle(req, res).catch((error: Error) => res.destroy(error));
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", () => resolve());
      });
    },
    async teardown() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
