/** The Hono app: tenancy, routes, the OpenAPI document, and one error handler for every failure. */
import { OpenAPIHono } from "@hono/zod-openapi";
import { HTTPException } from "hono/http-exception";
import { tenancy, type AppEnv } from "./auth";
import { ApiError, isOverloaded } from "./errors";
import { cors } from "./http/cors";
import { rateLimit } from "./http/ratelimit";
import { validationError } from "./http/validation";
import { docs } from "./routes/docs";
import { runs } from "./routes/runs";
import { system } from "./routes/system";

/** Seconds a client is asked to wait when an object is overloaded. */
const OVERLOADED_RETRY_S = 1;

export const app = new OpenAPIHono<AppEnv>({
  defaultHook: async (result, c) => {
    if (!result.success) throw await validationError(result.error, result.target, c);
  },
});

// /health and /openapi.json are public; everything that touches jobs acts for a tenant, within
// its key's rate limit.
app.use("*", cors());
for (const path of ["/api/*", "/stats"]) app.use(path, tenancy(), rateLimit());
app.route("/", docs);
app.route("/", system);
app.route("/", runs);

app.doc31("/openapi.json", {
  openapi: "3.1.0",
  info: {
    title: "Edge runs",
    version: "0.1.0",
    description: "Submit, watch, fetch, list, cancel and delete long-running agent jobs (PraisonAI Async Jobs API).",
  },
});

app.notFound((c) => c.json({ detail: "Not Found" }, 404));

app.onError((thrown, c) => {
  const error = isOverloaded(thrown)
    ? new ApiError("overloaded", "Service overloaded; retry shortly", {}, { "Retry-After": String(OVERLOADED_RETRY_S) })
    : thrown;
  if (error instanceof ApiError) {
    const detail = error.detail;
    return c.json({ detail, ...error.extra }, error.status, error.headers);
  }
  if (error instanceof HTTPException) {
    return c.json({ detail: error.message || "Bad request" }, error.status);
  }
  console.error("unhandled error", error);
  return c.json({ detail: "Internal server error" }, 500);
});
