/**
 * The contract's shapes as zod schemas, one file per concern: the single source for request
 * validation, TypeScript types and the OpenAPI document. zod's tree-shakable form ("mini") keeps
 * the Worker small; a schema with an `id` is a named component of the OpenAPI document. Each
 * schema is built on its first use (`jobSchema()`): building them all as the module loads cost
 * every cold isolate about 15 ms, mostly for response shapes that only the OpenAPI document reads.
 */
export { hasEntries, instantOf, isTrue, MAX_METADATA_FILTERS, MAX_TAGS, statusSchema, TAG, tagsSchema, withoutProtoKey } from "./fields";
export * from "./submit";
export * from "./runs";
export * from "./input";
export * from "./bulk";
export * from "./tokens";
