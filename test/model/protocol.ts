/** What the local model server (llm-server.ts) and the tests that call it agree on. */
export const LLM_PORT = 18431;
export const LLM_URL = `http://127.0.0.1:${LLM_PORT}`;
export const LLM_KEY = "test-model-key";

/** The answer the server streams for a task: predictable, so tests can check every output. */
export function answerFor(task: string, topic: string): string {
  return `Answer to "${task}" on ${topic}. `.repeat(4);
}

/**
 * The usage the server reports for a completion (when asked, with `stream_options.include_usage`):
 * counts no estimate would give, so that a test can tell them from estimates.
 */
export function usageFor(messages: number, pieces: number) {
  return { prompt_tokens: 1000 + messages, completion_tokens: 3 * pieces };
}
