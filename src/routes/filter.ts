/**
 * The filter of a list or of the live feed, from the query: `status`, `session_id`, `tag`
 * (repeatable: every one), `metadata.<key>=<value>` (at most 5), narrowed to what a token reaches.
 * `status` or `session_id` given more than once is read by its last value, as FastAPI reads it;
 * given empty, it is not given.
 */
import type { Context } from "hono";
import type { AppEnv } from "../auth";
import { ApiError } from "../errors";
import { isStatus, STATUSES, type Status } from "../run/transitions";
import { MAX_METADATA_FILTERS, MAX_TAGS, TAG } from "../schemas";
import type { RunFilter } from "../tenant/feed";

const METADATA = "metadata.";

const invalid = (loc: string, msg: string) => new ApiError("validation", [{ loc: ["query", loc], msg, type: "value_error" }]);

/** The filter the query asks for; null when a token's reach leaves nothing of it (an empty result). */
export function runFilter(c: Context<AppEnv>, what: string): RunFilter | null {
  const url = new URL(c.req.url);
  // An empty one is not given, as PraisonAI's server reads it (`if status:`): `?status=` lists every status.
  const last = (name: string) => url.searchParams.getAll(name).at(-1) || null;
  const filter: RunFilter = {};
  const status = last("status");
  if (status !== null) {
    if (!isStatus(status)) throw new ApiError("bad_request", `Invalid status: ${status}. Valid values: [${STATUSES.map((s) => `'${s}'`).join(", ")}]`);
    filter.status = status as Status;
  }
  const session = last("session_id");
  if (session !== null) {
    if (session.length > 256) throw invalid("session_id", "session_id is at most 256 characters");
    filter.session_id = session;
  }
  const tags = url.searchParams.getAll("tag");
  if (tags.length > MAX_TAGS) throw invalid("tag", `at most ${MAX_TAGS} tags`);
  for (const tag of tags) if (!TAG.test(tag)) throw invalid("tag", "a tag is 1 to 64 of A-Za-z0-9_.:-");
  if (tags.length > 0) filter.tags = [...new Set(tags)];
  // A map, so that a key such as `constructor` or `__proto__` is a key like any other.
  const metadata = new Map<string, string>();
  for (const [name, value] of url.searchParams) {
    if (!name.startsWith(METADATA)) continue;
    const key = name.slice(METADATA.length);
    if (key.length === 0 || key.length > 64) throw invalid(name, "a metadata key is 1 to 64 characters");
    if (value.length > 512) throw invalid(name, "a metadata value is at most 512 characters");
    if (metadata.has(key) && metadata.get(key) !== value) throw invalid(name, "give each metadata key once");
    metadata.set(key, value);
    if (metadata.size > MAX_METADATA_FILTERS) throw invalid(name, `at most ${MAX_METADATA_FILTERS} metadata filters`);
  }
  if (metadata.size > 0) filter.metadata = Object.fromEntries(metadata);
  return narrowed(c, filter, what);
}

/** A token lists and watches only its session's and tags' jobs; one limited to runs neither lists nor watches. */
function narrowed(c: Context<AppEnv>, filter: RunFilter, what: string): RunFilter | null {
  const grant = c.get("token");
  if (grant === null) return filter;
  if (grant.runs) throw new ApiError("forbidden", `Token does not allow ${what}`);
  if (grant.session_id !== null) {
    if (filter.session_id !== undefined && filter.session_id !== grant.session_id) return null;
    filter.session_id = grant.session_id;
  }
  if (grant.tags) filter.tags = [...new Set([...(filter.tags ?? []), ...grant.tags])];
  return filter;
}
