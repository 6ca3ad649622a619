/** What the local model server (llm-server.ts) and the tests that call it agree on. */
export const LLM_PORT = 18431;
export const LLM_URL = `http://127.0.0.1:${LLM_PORT}`;
export const LLM_KEY = "test-model-key";

/** The answer the server streams for a task: predictable, so tests can check every output. */
export function answerFor(task: string, topic: string): string {
  return `Answer to "${task}" on ${topic}. `.repeat(4);
}

/** The message of the server's long refusal (model "long-error"). */
export const CONTEXT_TOO_LONG =
  "This model's maximum context length is 8192 tokens. However, your messages resulted in 9021 tokens. Please reduce the length of the messages.";

/** How the server's error page that never ends begins (model "endless-error"): longer than a job's error holds. */
export const ENDLESS_ERROR_PAGE = `<!doctype html><html><head><title>502 Bad Gateway</title></head><body>${"<p>upstream unavailable</p>".repeat(20)}`;

/**
 * The usage the server reports for a completion (when asked, with `stream_options.include_usage`):
 * counts no estimate would give, so that a test can tell them from estimates.
 */
export function usageFor(messages: number, pieces: number) {
  return { prompt_tokens: 1000 + messages, completion_tokens: 3 * pieces };
}

/** A chat-completions request as the server recorded it (served back at GET /_requests). */
export interface RecordedRequest {
  /** The path and query the request was sent to. */
  url: string;
  model: string;
  topic: string;
  body: {
    model: string;
    temperature?: number;
    max_tokens?: number;
    max_completion_tokens?: number;
    stream_options?: { include_usage?: boolean };
    messages: { role: string; content: string }[];
  };
  at: number;
  /** The client went away before the answer was finished. */
  closedEarly: boolean;
  finished: boolean;
  /** How many pieces of the answer went out before the end or the hang-up. */
  piecesSent: number;
}

/** The requests the server recorded for a topic, oldest first. */
export async function requestsFor(topic: string): Promise<RecordedRequest[]> {
  return ((await (await fetch(`${LLM_URL}/_requests`)).json()) as RecordedRequest[]).filter((r) => r.topic === topic);
}
