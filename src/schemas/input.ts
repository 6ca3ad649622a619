/** Human input: what a job that stopped for a person asks, and what the person answers. */
import * as z from "zod/mini";
import { described, lazy, named } from "./fields";

/** The most text a person's answer to a request for input may hold. */
export const MAX_INPUT_BYTES = 64 * 1024;

export const inputRequestSchema = lazy(() =>
  named(
    z.object({
      step: z.string(),
      prompt: z.string(),
      output: described(z.string(), "The step's answer, at most 16 KiB"),
      requested_at: z.string(),
      expires_at: z.string(),
    }),
    "InputRequest",
  ),
);

const inputText = () =>
  z.string().check(z.refine((t) => new TextEncoder().encode(t).length <= MAX_INPUT_BYTES, `input must be at most ${MAX_INPUT_BYTES} bytes`));

export const inputBodySchema = lazy(() =>
  named(
    z
      .object({
        action: z.enum(["approve", "revise", "reject"]),
        input: z.nullish(described(inputText(), "approve: a note for the next tasks; revise: the feedback; reject: the reason")),
      })
      .check(
        z.refine((body) => body.action !== "revise" || (body.input ?? "").trim().length > 0, {
          message: "revise needs input: the feedback for the step",
          path: ["input"],
        }),
      ),
    "RunInput",
  ),
);
export type InputBody = z.infer<ReturnType<typeof inputBodySchema>>;
