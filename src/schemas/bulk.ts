/** A bulk cancel or delete: what it asks, and what it answers as it goes. */
import * as z from "zod/mini";
import { described, hasEntries, isoTime, lazy, metadataFilterSchema, named, someTagsSchema, statusSchema, text } from "./fields";

/** The most job ids one bulk request may name, and the most jobs its filter may match. */
export const MAX_BULK_IDS = 1000;
export const MAX_BULK_MATCHES = 100_000;

export const bulkBodySchema = lazy(() =>
  named(
    z
      .strictObject({
        status: z.nullish(statusSchema()),
        session_id: z.nullish(text(256)),
        created_before: z.nullish(described(isoTime(), "Jobs created before this time (ISO 8601)")),
        tags: z.nullish(described(someTagsSchema(), "Jobs carrying every one of these tags")),
        metadata: z.nullish(described(metadataFilterSchema(), "Jobs whose metadata holds each of these values exactly (at most 5 keys)")),
        job_ids: z.nullish(z.array(text(140, 1)).check(z.minLength(1), z.maxLength(MAX_BULK_IDS))),
        force: z.nullish(described(z.boolean(), "delete: cancel queued, running and awaiting jobs first (else they are skipped)")),
      })
      .check(
        z.refine((b) => (b.job_ids == null) !== (b.status == null && b.session_id == null && b.created_before == null && b.tags == null && !hasEntries(b.metadata)), {
          message: "Give job_ids, or a filter (status, session_id, tags, metadata, created_before), not both and not neither",
        }),
      ),
    "BulkRequest",
  ),
);
export type BulkBody = z.infer<ReturnType<typeof bulkBodySchema>>;
export type BulkInput = z.input<ReturnType<typeof bulkBodySchema>>;

export const bulkAcceptedSchema = lazy(() => named(z.object({ bulk_id: z.string(), matched: z.int() }), "BulkAccepted"));
export type BulkAccepted = z.infer<ReturnType<typeof bulkAcceptedSchema>>;

export const bulkProgressSchema = lazy(() =>
  named(
    z.object({
      bulk_id: z.string(),
      action: z.enum(["cancel", "delete"]),
      matched: z.int(),
      done: z.int(),
      skipped: described(z.int(), "Jobs the action did not apply to when first asked (already finished, not finished without force, or gone)"),
      failed: z.int(),
      state: z.enum(["running", "done"]),
    }),
    "BulkProgress",
  ),
);
export type BulkProgress = z.infer<ReturnType<typeof bulkProgressSchema>>;


export const bulkIdParamSchema = lazy(() => z.object({ bulk_id: z.string() }));
