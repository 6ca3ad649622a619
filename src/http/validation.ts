/**
 * Request validation with the contract's zod schemas, and their failures in the FastAPI shape
 * clients expect: 422 `{"detail": [{loc, msg, type}]}`.
 */
import { validator } from "hono/validator";
import * as z from "zod/mini";
import { en } from "zod/locales";
import { ApiError } from "../errors";

// zod's tree-shakable form carries no messages of its own: the English ones, as the full form has.
z.config(en());

const LOCATION = { json: "body", query: "query", param: "path" } as const;
type Target = keyof typeof LOCATION;

function valueAt(root: unknown, path: PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/**
 * Whether `issue` is the safe range zod's `int` holds every integer to, broken by a value that also
 * breaks the field's own, narrower bound, which another issue names: a priority of 1e20 is refused
 * once, as over 9, not also as over 9007199254740991.
 */
function outdoneBound(issue: z.core.$ZodIssue, issues: z.core.$ZodIssue[]): boolean {
  const safeBound =
    (issue.code === "too_big" && issue.maximum === Number.MAX_SAFE_INTEGER) || (issue.code === "too_small" && issue.minimum === Number.MIN_SAFE_INTEGER);
  const samePath = (other: z.core.$ZodIssue) => other.path.length === issue.path.length && other.path.every((key, i) => key === issue.path[i]);
  return safeBound && issues.some((other) => other !== issue && other.code === issue.code && samePath(other));
}

export function validationError(error: z.core.$ZodError, target: Target, source: unknown): ApiError {
  const detail = error.issues.filter((issue) => !outdoneBound(issue, error.issues)).map((issue) => {
    const missing = issue.code === "invalid_type" && issue.path.length > 0 && valueAt(source, issue.path) === undefined;
    return {
      loc: [LOCATION[target], ...issue.path],
      msg: missing ? "Field required" : issue.message,
      type: missing ? "missing" : issue.code,
    };
  });
  return new ApiError("validation", detail);
}

/**
 * A query parameter given more than once is read by its last value, as FastAPI reads one; one
 * whose schema takes a list (`tag`) keeps every value.
 */
function lastOfRepeated(schema: z.ZodMiniType, query: Record<string, unknown>): Record<string, unknown> {
  const shape = (schema._zod.def as { shape?: Record<string, z.ZodMiniType> }).shape ?? {};
  return Object.fromEntries(
    Object.entries(query).map(([key, value]) => {
      if (!Array.isArray(value) || !Object.hasOwn(shape, key) || shape[key]!.safeParse(value).success) return [key, value];
      return [key, value.at(-1)];
    }),
  );
}

/**
 * The body `jsonBody` admitted and parsed. Hono's own reading (which parses the cached text again)
 * takes only a body whose content type names JSON, and one that names none is JSON too, as
 * FastAPI reads it.
 */
async function admittedBody(bodyCache: object, given: unknown): Promise<unknown> {
  const parsed = (bodyCache as { json?: Promise<unknown> }).json;
  return parsed ? await parsed : given;
}

/** Middleware: the request's body, query or path parameters checked against `schema` (built on first use), typed for `c.req.valid`. */
export function valid<T extends Target, S extends z.ZodMiniType>(target: T, schema: () => S) {
  return validator(target, async (given, c) => {
    const value =
      target === "query" ? lastOfRepeated(schema(), given as Record<string, unknown>) : target === "json" ? await admittedBody(c.req.bodyCache, given) : given;
    const result = schema().safeParse(value);
    if (!result.success) throw validationError(result.error, target, value);
    return result.data as z.output<S>;
  });
}
