/**
 * Reads a chat completion's answer: streamed as server-sent events, or answered whole as JSON,
 * each piece within the idle timeout.
 */
import { messageOf } from "../../errors";
import { EventStreamReader, type SseBlock } from "../../http/event-stream";
import { StepFailed, TransientError } from "../types";

/**
 * The longest answer a step takes (its text streamed, or its JSON answered whole), in characters:
 * many times what any model writes in one answer (128k tokens come to about half a MiB), and well
 * within what an object can hold in memory while it writes the answer out.
 */
export const ANSWER_MAX_CHARS = 4 * 1024 * 1024;
export const answerTooLarge = () => new StepFailed(`Model answer too large: more than ${ANSWER_MAX_CHARS} characters; the request was stopped`);

/** The provider's own counts, from the chunk that carries them (`stream_options.include_usage`). */
interface ProviderUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
}

/** A completion read whole: its text, the provider's usage when it sent one, and why the model stopped. */
export interface Completion {
  text: string;
  usage: ProviderUsage | null;
  finishReason: string | null;
}

/** One chunk of a streamed completion, as OpenAI sends it; a provider may send an error instead. */
interface StreamChunk {
  choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  error?: unknown;
  usage?: ProviderUsage | null;
}

/** A body the runner reads, as its failures name it: a streamed completion, or one answered whole. */
type BodyKind = "stream" | "answer";

/**
 * The body's next piece; a transient failure when none comes within `idleTimeoutMs` or the body
 * breaks, or the reason of `signal` when it stopped the request.
 */
async function nextPiece(reader: ReadableStreamDefaultReader<string>, idleTimeoutMs: number, signal: AbortSignal, what: BodyKind): Promise<ReadableStreamReadResult<string>> {
  let idle: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<never>((_, reject) => {
    idle = setTimeout(() => reject(new TransientError(`Model ${what} stalled: no data for ${idleTimeoutMs} ms`)), idleTimeoutMs);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    throw error instanceof TransientError ? error : new TransientError(`Model ${what} broke: ${messageOf(error)}`);
  } finally {
    clearTimeout(idle ?? null);
  }
}

/**
 * Reads a body to its end, or until `onPiece` says it has what it needs (true), handing each piece
 * on, each within `idleTimeoutMs`. A read that fails, or one stopped early, lets go of the body, so
 * the provider stops sending.
 */
async function readBody(body: ReadableStream<Uint8Array>, idleTimeoutMs: number, signal: AbortSignal, what: BodyKind, onPiece: (text: string) => boolean | void): Promise<void> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (let piece = await nextPiece(reader, idleTimeoutMs, signal, what); !piece.done; piece = await nextPiece(reader, idleTimeoutMs, signal, what)) {
      if (onPiece(piece.value) === true) return void (await reader.cancel().catch(() => {}));
    }
  } catch (error) {
    await reader.cancel().catch(() => {});
    throw error;
  }
}

/**
 * The chunk a block of the stream carries: "done" for its end marker, null for a block without data.
 * An `error` event, or a chunk that carries an `error`, fails the read (as OpenAI's SDKs read them).
 */
function chunkOf(block: SseBlock): StreamChunk | "done" | null {
  const data = block.data.trim();
  if (data === "") return null;
  if (data === "[DONE]") return "done";
  let chunk: StreamChunk | null = null;
  try {
    chunk = JSON.parse(data);
  } catch {
    // named below
  }
  if (typeof chunk === "object" && chunk?.error) throw new TransientError(`Model stream reported an error: ${JSON.stringify(chunk.error).slice(0, 200)}`);
  if (block.event === "error") throw new TransientError(`Model stream reported an error: ${data.slice(0, 200)}`);
  if (typeof chunk !== "object" || chunk === null) throw new TransientError(`Model stream was malformed: ${data.slice(0, 100)}`);
  return chunk;
}

/** Adds a chunk's text and usage to the completion, handing its text on; true when it carries the finish. */
function take(chunk: StreamChunk, completion: Completion, onDelta: (text: string) => void): boolean {
  if (chunk.usage) completion.usage = chunk.usage;
  const choice = chunk.choices?.[0];
  const delta = choice?.delta?.content;
  if (typeof delta === "string" && delta) {
    completion.text += delta;
    onDelta(delta);
  }
  if (!choice?.finish_reason) return false;
  completion.finishReason = choice.finish_reason;
  return true;
}

/**
 * Reads the event stream of a streamed completion, handing each content delta on; returns the
 * text, the provider's usage when it sent one, and the finish reason. It stops at the end marker
 * (`[DONE]`), as OpenAI's SDKs do. An error reported mid-stream fails the read, and the body is
 * let go of.
 */
export async function readCompletion(
  body: ReadableStream<Uint8Array>,
  idleTimeoutMs: number,
  onDelta: (text: string) => void,
  signal: AbortSignal,
): Promise<Completion> {
  const completion: Completion = { text: "", usage: null, finishReason: null };
  const events = new EventStreamReader();
  let finished = false;
  let marked = false;
  /** Takes the blocks; true at the end marker, after which nothing is read (a server may hold the connection). */
  const takeAll = (blocks: SseBlock[]): boolean => {
    for (const block of blocks) {
      const chunk = chunkOf(block);
      if (chunk === "done") return (marked = finished = true);
      if (chunk && take(chunk, completion, onDelta)) finished = true;
    }
    return false;
  };
  await readBody(body, idleTimeoutMs, signal, "stream", (text) => takeAll(events.push(text)));
  // A stream that ends after a whole line ends its last block there, as one line's end would.
  if (!marked) takeAll(events.push("\n", true));
  if (!finished) throw new TransientError("Model stream ended before the answer was complete");
  return completion;
}

/**
 * A completion answered whole, as JSON: some OpenAI-compatible servers and gateways answer so
 * although the request asked for a stream. A 200 that carries an error is retried as a broken
 * stream's is; JSON that is no chat completion fails the step.
 */
export async function readWholeCompletion(body: ReadableStream<Uint8Array>, idleTimeoutMs: number, signal: AbortSignal): Promise<Completion> {
  let raw = "";
  await readBody(body, idleTimeoutMs, signal, "answer", (text) => {
    raw += text;
    if (raw.length > ANSWER_MAX_CHARS) throw answerTooLarge();
  });
  let answer: { choices?: { message?: { content?: string | null }; finish_reason?: string | null }[]; error?: unknown; usage?: ProviderUsage | null };
  try {
    answer = JSON.parse(raw);
  } catch {
    throw new TransientError(`Model answer was malformed: ${raw.slice(0, 100)}`);
  }
  if (answer?.error) throw new TransientError(`Model answer reported an error: ${JSON.stringify(answer.error).slice(0, 200)}`);
  const choice = Array.isArray(answer?.choices) ? answer.choices[0] : undefined;
  if (!choice?.message) throw new StepFailed(`Model endpoint answered JSON that is not a chat completion: ${raw.slice(0, 100)}`);
  return { text: choice.message.content ?? "", usage: answer.usage ?? null, finishReason: choice.finish_reason ?? null };
}
