/** zod failures in the FastAPI shape clients expect: 422 `{"detail": [{loc, msg, type}]}`. */
import type { Context } from "hono";
import type { ZodError } from "zod";
import { ApiError } from "../errors";

const LOCATION: Record<string, string> = { json: "body", query: "query", param: "path", header: "header" };

function valueAt(root: unknown, path: PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

export async function validationError(error: ZodError, target: string, c: Context): Promise<ApiError> {
  const source = target === "json" ? await c.req.json().catch(() => undefined) : c.req.query();
  const detail = error.issues.map((issue) => {
    const missing = issue.code === "invalid_type" && issue.path.length > 0 && valueAt(source, issue.path) === undefined;
    return {
      loc: [LOCATION[target] ?? target, ...issue.path],
      msg: missing ? "Field required" : issue.message,
      type: missing ? "missing" : issue.code,
    };
  });
  return new ApiError("validation", detail);
}
