/** The Hono app: request ids and logs, tenancy, routes, the OpenAPI document, and one error handler for every failure. */
import { Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import { keyOnly, tenancy, type AppEnv } from "./auth";
import { settingsChecked } from "./config";
import { ApiError, isOverloaded, isTransient, isVersionSkew } from "./errors";
import { cors } from "./http/cors";
import { openApiDocument } from "./http/openapi";
import { rateLimit } from "./http/ratelimit";
import { requestLog } from "./http/requests";
import { routesOf, unrouted } from "./http/routing";
import { logFailure } from "./log";
import { docs } from "./routes/docs";
import { bulk, bulkOperations } from "./routes/bulk";
import { feed, feedOperations } from "./routes/feed";
import { frontend } from "./routes/frontend";
import { runOperations, runs } from "./routes/runs";
import { retries, retryOperations } from "./routes/retry";
import { submitOperations, submits } from "./routes/submit";
import { system, systemOperations } from "./routes/system";
import { tokenOperations, tokens } from "./routes/tokens";
import { VERSION } from "./version";

/** Seconds a client is asked to wait when an object is overloaded, or a failure passes. */
const OVERLOADED_RETRY_S = 1;

export const app = new Hono<AppEnv>();

// /health, /openapi.json and the pages are public; everything that touches jobs acts for a
// tenant, within its key's rate limit, on a deployment whose settings are sound.
app.use("*", requestLog(), cors());
for (const path of ["/api/*", "/stats"]) app.use(path, settingsChecked(), tenancy(), rateLimit());
// What reaches the tenant as a whole, a scoped token may not do.
app.use("/stats", keyOnly("stats"));
app.use("/api/v1/runs/bulk/*", keyOnly("bulk operations"));
app.route("/", frontend);
app.route("/", docs);
app.route("/", system);
app.route("/", tokens);
// Before the job routes: `bulk` and `events` are not job ids.
app.route("/", bulk);
app.route("/", feed);
app.route("/", submits);
app.route("/", retries);
app.route("/", runs);

let document: object | null = null;
app.get("/openapi.json", (c) => {
  document ??= openApiDocument(
    {
      title: "Edge runs",
      version: VERSION,
      description: "Submit, watch, fetch, list, cancel and delete long-running agent jobs (PraisonAI Async Jobs API).",
    },
    [...systemOperations, ...tokenOperations, ...submitOperations, ...retryOperations, ...runOperations, ...feedOperations, ...bulkOperations],
  );
  return c.json(document);
});

// The router's own table, read on the first request no route serves: every route is registered by then.
let routes: ReturnType<typeof routesOf> | null = null;
app.notFound((c) => unrouted(c, (routes ??= routesOf(app.routes))));

/** Failures a client is asked to come back from in a moment (503 with Retry-After), each with what it is told, the first that applies. */
const PASSING: [(error: unknown) => boolean, string][] = [
  [isOverloaded, "Service overloaded; retry shortly"],
  [isVersionSkew, "Service is being updated; retry shortly"],
  [isTransient, "Service unavailable; retry shortly"],
];

app.onError((thrown, c) => {
  if (isTransient(thrown)) logFailure("transient platform error", thrown, { request_id: c.get("requestId") });
  const passing = PASSING.find(([applies]) => applies(thrown));
  const error = passing ? new ApiError("overloaded", passing[1], {}, { "Retry-After": String(OVERLOADED_RETRY_S) }) : thrown;
  if (error instanceof ApiError) {
    const detail = error.detail;
    return c.json({ detail, ...error.extra }, error.status, error.headers);
  }
  if (error instanceof HTTPException) {
    return c.json({ detail: error.message || "Bad request" }, error.status);
  }
  logFailure("unhandled error", error, { request_id: c.get("requestId") });
  return c.json({ detail: "Internal server error" }, 500);
});
