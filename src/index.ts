/** Worker entry: the HTTP app and the Durable Object classes it routes to. */
import { app } from "./app";

export { RunObject } from "./run/RunObject";
export { TenantIndex } from "./index/TenantIndex";

export default app satisfies ExportedHandler<Env>;
