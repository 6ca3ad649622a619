/** Scoped tokens: what one may do and reach, what minting one asks, and what it answers. */
import * as z from "zod/mini";
import { described, hasEntries, int, lazy, metadataRecord, named, someTagsSchema, text } from "./fields";
import { tokenConfigSchema } from "./submit";

/** What a scoped token may do (src/tokens.ts). */
export const SCOPES = ["read", "stream", "submit", "cancel", "input", "delete"] as const;
export type Scope = (typeof SCOPES)[number];

export const MAX_TOKEN_RUNS = 100;
/** The most metadata entries a token fixes: each travels in the token, which a browser may put in an address. */
export const MAX_TOKEN_METADATA = 5;
/** A bundled agent as a job's `agent_id` names it: what a token may fix (an inline one has no name). */
const AGENT_ID = /^(file|recipe):[^\s]{1,256}$/;
export const tokenBodySchema = lazy(() =>
  named(
    z
      .strictObject({
        scopes: described(
          z.array(z.enum(SCOPES)).check(z.minLength(1), z.maxLength(SCOPES.length * 2)),
          "read (status, result, output, list), stream (stream, feed), submit, cancel, input, delete",
        ),
        runs: z.nullish(described(z.array(z.string().check(z.regex(/^run_[A-Za-z0-9_-]{1,128}$/, "a job id is run_ followed by 1 to 128 of A-Za-z0-9_-"))).check(z.minLength(1), z.maxLength(MAX_TOKEN_RUNS)), "The jobs the token reaches")),
        session_id: z.nullish(described(text(256, 1), "The token reaches this session's jobs; the jobs it submits join it")),
        tags: z.nullish(described(someTagsSchema(), "The token reaches jobs carrying all these tags; the jobs it submits carry them")),
        ttl_seconds: z.nullish(described(int(60, 86_400), "Lifetime, 60 to 86400 seconds (default 900)")),
        max_submits: z.nullish(described(int(1, 1000), "With submit: how many jobs the token may submit (default 1)")),
        concurrency_key: z.nullish(described(text(128, 1), "With submit: the concurrency key of every job the token submits (one end user's limit); none otherwise, whatever the body says")),
        priority: z.nullish(described(int(0, 9), "With submit: the priority of every job the token submits; the default (5) otherwise, whatever the body says")),
        config: z.nullish(tokenConfigSchema()),
        agent: z.nullish(
          described(
            z.string().check(z.regex(AGENT_ID, "agent must be file:<agent_file> or recipe:<recipe_name>, as a job's agent_id names it")),
            "With submit: the agent every job the token submits runs (file:<agent_file> or recipe:<recipe_name>, as a job's agent_id names it), whatever agent_file, agent_yaml or recipe_name the body names",
          ),
        ),
        metadata: z.nullish(
          described(
            metadataRecord(MAX_TOKEN_METADATA, `a token fixes at most ${MAX_TOKEN_METADATA} metadata entries`),
            "With submit: metadata entries every job the token submits carries, over the body's (its user's id, say, which the backend can then trust)",
          ),
        ),
      })
      .check(
        z.refine((b) => b.max_submits == null || b.scopes.includes("submit"), { message: "max_submits needs the submit scope", path: ["max_submits"] }),
        z.refine((b) => b.concurrency_key == null || b.scopes.includes("submit"), { message: "concurrency_key needs the submit scope", path: ["concurrency_key"] }),
        z.refine((b) => b.priority == null || b.scopes.includes("submit"), { message: "priority needs the submit scope", path: ["priority"] }),
        z.refine((b) => b.config == null || b.scopes.includes("submit"), { message: "config needs the submit scope", path: ["config"] }),
        z.refine((b) => !hasEntries(b.metadata) || b.scopes.includes("submit"), { message: "metadata needs the submit scope", path: ["metadata"] }),
        z.refine((b) => b.agent == null || b.scopes.includes("submit"), { message: "agent needs the submit scope", path: ["agent"] }),
        z.refine((b) => b.runs != null || b.session_id != null || b.tags != null || b.scopes.every((s) => s === "submit"), {
          message: "A token needs a reach (runs, session_id or tags) unless its only scope is submit",
        }),
      ),
    "TokenRequest",
  ),
);
export type TokenInput = z.input<ReturnType<typeof tokenBodySchema>>;

/** What a token grants, as the mint answers it and verify describes it. */
const grantShape = () => ({
  scopes: z.array(z.enum(SCOPES)),
  runs: z.nullable(z.array(z.string())),
  session_id: z.nullable(z.string()),
  tags: z.nullable(z.array(z.string())),
  max_submits: z.nullable(z.int()),
  concurrency_key: z.nullable(z.string()),
  priority: z.nullable(z.int()),
  config: z.nullable(tokenConfigSchema()),
  agent: z.nullable(z.string()),
  metadata: z.nullable(z.record(z.string(), z.string())),
});

export const tokenSchema = lazy(() =>
  named(
    z.object({
      token: described(z.string(), "Send as Authorization: Bearer <token>, or ?token= on the stream and feed"),
      expires_at: z.string(),
      ...grantShape(),
    }),
    "Token",
  ),
);
export type TokenResponse = z.infer<ReturnType<typeof tokenSchema>>;

export const credentialSchema = lazy(() =>
  named(
    z.object({
      expires_at: described(z.nullable(z.string()), "When the token expires; null for an API key"),
      ...grantShape(),
      submits_left: described(z.nullable(z.int()), "How many more jobs the token may submit; null without a limit"),
    }),
    "Credential",
  ),
);
export type Credential = z.infer<ReturnType<typeof credentialSchema>>;
