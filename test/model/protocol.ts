/** What the local model server (llm-server.ts) and the tests that call it agree on. */
export const LLM_PORT = 18431;
export const LLM_URL = `http://127.0.0.1:${LLM_PORT}`;
export const LLM_KEY = "test-model-key";

/** The answer the server streams for a task: predictable, so tests can check every output. */
export function answerFor(task: string, topic: string): string {
  return `Answer to "${task}" on ${topic}. `.repeat(4);
}
