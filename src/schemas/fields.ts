/**
 * What every schema file builds with (zod's tree-shakable form, each schema built on its first
 * use, named components of the OpenAPI document) and the fields several of them share: a job's
 * status and its tags.
 */
import * as z from "zod/mini";
import { STATUSES } from "../run/transitions";

export const int = (min: number, max?: number, message?: string) =>
  max === undefined ? z.int().check(z.minimum(min, message)) : z.int().check(z.minimum(min, message), z.maximum(max, message));
export const text = (max: number, min = 0) => (min > 0 ? z.string().check(z.minLength(min), z.maxLength(max)) : z.string().check(z.maxLength(max)));
/** A field the OpenAPI document explains. */
export const described = <T extends z.ZodMiniType>(schema: T, description: string): T => schema.check(z.describe(description));
/** A schema built on its first use, then kept. */
export function lazy<T>(build: () => T): () => T {
  let built: T | undefined;
  return () => (built ??= build());
}
/** A named component of the OpenAPI document. */
export const named = <T extends z.ZodMiniType>(schema: T, id: string, description?: string): T => schema.check(z.meta({ id, description }));

export const statusSchema = lazy(() =>
  named(z.enum(STATUSES), "Status"),
);

/** A job's tags: at most 10, each 1 to 64 of `A-Za-z0-9_.:-`. */
export const MAX_TAGS = 10;
export const TAG = /^[A-Za-z0-9_.:-]{1,64}$/;
export const tagText = () => z.string().check(z.regex(TAG, "a tag is 1 to 64 of A-Za-z0-9_.:-"));
export const tagsSchema = lazy(() =>
  named(
    z.array(tagText()).check(z.maxLength(MAX_TAGS, `at most ${MAX_TAGS} tags`)),
    "Tags",
  ),
);
