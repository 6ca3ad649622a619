/** GET /api/v1/runs/events: the tenant's live feed, narrowed like a list, resumable with Last-Event-ID or ?after=. */
import { Hono } from "hono";
import { scope, type AppEnv } from "../auth";
import { ApiError } from "../errors";
import type { Operation } from "../http/openapi";
import { eventStream, resumeAfter } from "../http/sse";
import { errorSchema, feedQuerySchema } from "../schemas";
import { feedPositions, watchFeed } from "../tenant/sharded";
import { runFilter } from "./filter";
import { tokenExpiry } from "./reach";

export const feed = new Hono<AppEnv>();
export const feedOperations: Operation[] = [];

feedOperations.push({
  method: "get",
  path: "/api/v1/runs/events",
  summary: "Server-Sent Events of every change of the tenant's matching jobs (event: run, deleted, reset); resumable with Last-Event-ID or ?after=",
  query: feedQuerySchema,
  responses: {
    200: {
      description: "An endless event stream, with `: ping` every 15 s. The reference page's \"Try it out\" shows an answer only once it ends, which this one never does: open it with `curl -N` or an EventSource",
      media: "text/event-stream",
    },
    400: { json: errorSchema, description: "A malformed status or event id" },
    403: { json: errorSchema, description: "The token does not allow the feed" },
    422: { json: errorSchema, description: "A malformed filter" },
  },
});

feed.get("/api/v1/runs/events", scope("stream"), async (c) => {
  const filter = runFilter(c, "the feed");
  const position = resumeAfter(c.req.header("Last-Event-ID"), c.req.query("after"));
  const positions = feedPositions(c.env, position);
  if (positions === null) throw new ApiError("bad_request", `Invalid event id: ${position}`);
  if (c.req.method === "HEAD") return eventStream(null);
  // A token whose reach leaves nothing of the filter watches nothing (and is kept alive by pings).
  return eventStream(await watchFeed(c.env, c.get("tenant"), filter ?? { nothing: true }, positions), tokenExpiry(c));
});
