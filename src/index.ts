/** Worker entry: the HTTP app and the Durable Object classes it routes to. */
import { app } from "./app";

export { BulkObject } from "./bulk/BulkObject";
export { RunObject } from "./run/RunObject";
export { TenantLine } from "./tenant/TenantLine";
export { TenantProjection } from "./tenant/TenantProjection";

export default app satisfies ExportedHandler<Env>;
