/**
 * The OpenAPI 3.1 document, built on its first request from the routes' descriptions and the
 * same zod schemas that validate requests (named schemas become its components).
 */
import * as z from "zod/mini";
import { errorSchema } from "../schemas";

/** Schemas are given as the thunks of src/schemas: the document builds them, the Worker's start does not. */
type Schema = () => z.ZodMiniType;
type ObjectSchema = () => z.ZodMiniObject;

export interface Operation {
  method: "get" | "post" | "delete";
  /** In OpenAPI's form: `/api/v1/runs/{id}`. */
  path: string;
  summary: string;
  params?: ObjectSchema;
  query?: ObjectSchema;
  headers?: ObjectSchema;
  body?: Schema;
  /** By status: a description and, for a JSON answer, its schema or, for another, its media type. */
  responses: Record<number, OperationResponse>;
  /** Served without a key (`/health`); every other operation takes a key or a scoped token. */
  open?: true;
}

type OperationResponse = { description: string; json?: Schema; media?: string };

/** The ways to authenticate, either of them: as `security`, what Swagger UI's "Authorize" sends on "Try it out". */
const SECURITY_SCHEMES = { bearer: { type: "http", scheme: "bearer" }, apiKey: { type: "apiKey", in: "header", name: "X-API-Key" } };
const EITHER_SCHEME = Object.keys(SECURITY_SCHEMES).map((scheme) => ({ [scheme]: [] }));

/** What any operation that takes a key may answer besides its own responses (src/auth.ts, src/http/ratelimit.ts). */
const KEYED_RESPONSES: Record<number, OperationResponse> = {
  401: { json: errorSchema, description: "No key or token, a wrong one (`Unauthorized`), or an expired token (`Token expired`)" },
  429: { json: errorSchema, description: "Past the key's or the token's rate limit (`Rate limit exceeded for this API key`, `… for this token`), with `Retry-After`" },
  503: {
    json: errorSchema,
    description: "A setting of the deployment is malformed (`Service misconfigured: …`), or, with `Retry-After`, the service is overloaded, being updated or briefly unavailable (`Service overloaded; retry shortly`, …)",
  },
};

const COMPONENTS = "#/components/schemas/";
const options = { uri: (id: string) => COMPONENTS + id, unrepresentable: "any" } as const;

function bare(schema: Record<string, unknown>): Record<string, unknown> {
  const { $schema: _, $id: __, ...rest } = schema;
  return rest;
}

function schemaOf(lazySchema: Schema): Record<string, unknown> {
  const schema = lazySchema();
  const id = z.globalRegistry.get(schema)?.id;
  return id ? { $ref: COMPONENTS + id } : bare(z.toJSONSchema(schema, { ...options, io: "input" }) as Record<string, unknown>);
}

function parameters(where: "path" | "query" | "header", schema: ObjectSchema | undefined) {
  if (!schema) return [];
  const json = z.toJSONSchema(schema(), { ...options, io: "input" }) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, property]) => {
    const { description, ...rest } = property;
    return { name, in: where, required: where === "path" || (json.required ?? []).includes(name), description, schema: rest };
  });
}

function withKeyed(responses: Record<number, OperationResponse>): Record<number, OperationResponse> {
  const all = { ...responses };
  for (const [status, keyed] of Object.entries(KEYED_RESPONSES)) {
    const own = all[Number(status)];
    all[Number(status)] = own ? { ...own, description: `${own.description}; or ${keyed.description[0].toLowerCase()}${keyed.description.slice(1)}` } : keyed;
  }
  return all;
}

function operation(op: Operation) {
  const responses = Object.fromEntries(
    Object.entries(op.open ? op.responses : withKeyed(op.responses)).map(([status, r]) => {
      const content = r.json ? { "application/json": { schema: schemaOf(r.json) } } : r.media ? { [r.media]: { schema: { type: "string" } } } : undefined;
      return [status, content ? { description: r.description, content } : { description: r.description }];
    }),
  );
  return {
    summary: op.summary,
    parameters: [...parameters("path", op.params), ...parameters("query", op.query), ...parameters("header", op.headers)],
    ...(op.body ? { requestBody: { required: true, content: { "application/json": { schema: schemaOf(op.body) } } } } : {}),
    responses,
    security: op.open ? [] : EITHER_SCHEME,
  };
}

export function openApiDocument(info: { title: string; version: string; description: string }, operations: Operation[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of operations) (paths[op.path] ??= {})[op.method] = operation(op);
  // Every schema a route names is built by now, and with it every named one it holds. Those a
  // request's body reaches are given as the service reads them (a plain object takes a key it does
  // not name, and drops it: FastAPI's way), the others as the service writes them.
  const written = components("output");
  const read = components("input");
  const bodies = operations.flatMap((op) => (op.body ? [schemaOf(op.body)] : []));
  const readable = reachable(bodies, read);
  const schemas = Object.fromEntries(Object.keys(written).map((id) => [id, readable.has(id) ? read[id] : written[id]]));
  return {
    openapi: "3.1.0",
    info,
    paths,
    components: {
      schemas,
      securitySchemes: SECURITY_SCHEMES,
    },
  };
}

/** Every named schema, as the service reads it (`input`) or writes it (`output`). */
function components(io: "input" | "output"): Record<string, Record<string, unknown>> {
  const registry = z.toJSONSchema(z.globalRegistry, { ...options, io }) as { schemas: Record<string, Record<string, unknown>> };
  return Object.fromEntries(Object.entries(registry.schemas).map(([id, schema]) => [id, bare(schema)]));
}

/** The names of the components `roots` refer to, and those they refer to in turn. */
function reachable(roots: unknown[], schemas: Record<string, unknown>): Set<string> {
  const names = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (node === null || typeof node !== "object") return;
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string" && value.startsWith(COMPONENTS)) {
        const name = value.slice(COMPONENTS.length);
        if (!names.has(name)) {
          names.add(name);
          visit(schemas[name]);
        }
      } else visit(value);
    }
  };
  roots.forEach(visit);
  return names;
}
