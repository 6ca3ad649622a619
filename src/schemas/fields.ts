/**
 * What every schema file builds with (zod's tree-shakable form, each schema built on its first
 * use, named components of the OpenAPI document) and the fields several of them share: a job's
 * status, its tags and a time given in ISO 8601.
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

/**
 * An ISO 8601 time with its offset: `T` (or a space, as RFC 3339 allows) between date and time,
 * seconds and their fraction optional, `Z` or ±HH:MM (or ±HHMM). A time without an offset is
 * refused rather than read in a zone the client may not have meant.
 */
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(?:[Zz]|([+-])(\d{2}):?(\d{2}))$/;
const ISO_TIME_EXPECTED = "an ISO 8601 time with its offset, such as 2027-01-01T09:00:00Z";

/** The instant (ms since the epoch) an ISO 8601 time with its offset names; null for any other text or a day the month lacks. */
export function instantOf(text: string): number | null {
  const match = ISO_TIME.exec(text);
  if (!match) return null;
  const [, year, month, day, hour, minute, second = "0", fraction = "", sign, offsetHours = "0", offsetMinutes = "0"] = match;
  const [y, mo, d, h, mi, s, oh, om] = [year, month, day, hour, minute, second, offsetHours, offsetMinutes].map(Number) as [number, number, number, number, number, number, number, number];
  const date = new Date(0);
  date.setUTCFullYear(y, mo - 1, d);
  const sameDay = date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
  if (!sameDay || h > 23 || mi > 59 || s > 59 || oh > 23 || om > 59) return null;
  date.setUTCHours(h, mi, s, Math.floor(Number(`0${fraction}`) * 1000));
  return date.getTime() - (sign === "-" ? -1 : 1) * (oh * 60 + om) * 60_000;
}

/** An ISO 8601 time with its offset (`instantOf`); with `maxAheadS`, at most that far from now. */
export const isoTime = (maxAheadS?: number) => {
  const time = z.string().check(z.refine((t) => instantOf(t) !== null, `Invalid input: expected ${ISO_TIME_EXPECTED}`), z.meta({ format: "date-time" }));
  if (maxAheadS === undefined) return time;
  return time.check(z.refine((t) => (instantOf(t) ?? 0) <= Date.now() + maxAheadS * 1000, `Too late: expected a time at most ${maxAheadS} seconds from now`));
};

/** The words a boolean query parameter is read from, in any case, as FastAPI reads them. */
const TRUE_WORDS = new Set(["true", "1", "yes", "on", "t", "y"]);
const FALSE_WORDS = new Set(["false", "0", "no", "off", "f", "n"]);
/** A boolean query parameter (`?force=true`, `True`, `1`, `yes`...); read it with `isTrue`. */
export const queryBool = () =>
  z.string().check(
    z.refine((word) => TRUE_WORDS.has(word.toLowerCase()) || FALSE_WORDS.has(word.toLowerCase()), "Input should be a valid boolean, unable to interpret input"),
    z.meta({ type: "boolean" }),
  );
export const isTrue = (word: string | undefined): boolean => word !== undefined && TRUE_WORDS.has(word.toLowerCase());

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
/**
 * A record that refuses the key `__proto__`, naming it with `message`: a JSON object (or a YAML
 * map) may hold that key, and zod's record would drop it without a word.
 */
export const withoutProtoKey = <T extends z.ZodMiniType>(record: T, message: string) =>
  z.pipe(
    z.transform((value: unknown, ctx) => {
      if (value !== null && typeof value === "object" && Object.hasOwn(value, "__proto__")) {
        ctx.issues.push({ code: "custom", message, input: value, path: ["__proto__"] });
      }
      return value;
    }),
    record,
  );

/** Metadata: keys of 1 to 64 characters, values of at most 512, at most `maxKeys` of them. */
export const metadataRecord = (maxKeys: number, tooMany: string) =>
  withoutProtoKey(z.record(text(64, 1), text(512)).check(z.refine((m) => Object.keys(m).length <= maxKeys, tooMany)), "a metadata key may not be __proto__");

/** Whether an object (metadata, a recipe's config) names any entry: an empty one, like an empty or null field, is not given. */
export const hasEntries = <T extends object>(value: T | null | undefined): value is T => value != null && Object.keys(value).length > 0;

/** Metadata that narrows a list, the feed or a bulk request: exact values of at most this many keys. */
export const MAX_METADATA_FILTERS = 5;
export const metadataFilterSchema = () => metadataRecord(MAX_METADATA_FILTERS, `at most ${MAX_METADATA_FILTERS} metadata filters`);

/** Tags that narrow what a token reaches or a bulk request matches: at least one, since none would narrow nothing. */
export const someTagsSchema = () => z.array(tagText()).check(z.minLength(1), z.maxLength(MAX_TAGS, `at most ${MAX_TAGS} tags`));
