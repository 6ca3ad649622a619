/**
 * Runs a step on any OpenAI-compatible chat-completions endpoint (OpenAI, Workers AI's
 * OpenAI-compatible endpoint, vLLM, Ollama, LiteLLM), streaming the answer (or reading it whole
 * where the server answers JSON instead).
 */
import type { ModelSettings } from "../config";
import { messageOf } from "../errors";
import { EventStreamReader, type SseBlock } from "../http/event-stream";
import { retryAfterMs } from "../http/retry-after";
import { taskMessages } from "./agents";
import { BudgetExceeded, estimateTokens, overBudget, StepFailed, TransientError, type AgentTask, type CallUsage, type Runner, type StepInput, type StepOutput } from "./types";

const encoder = new TextEncoder();

/** The longest wait a provider's answer is heeded for before the step is tried again. */
const RETRY_AFTER_MAX_MS = 3_600_000;

/** The wait the answer asks for (`Retry-After`, `retry-after-ms`), at most RETRY_AFTER_MAX_MS. */
function waitAsked(res: Response): number | undefined {
  const ms = retryAfterMs(res.headers);
  return ms === undefined ? undefined : Math.min(ms, RETRY_AFTER_MAX_MS);
}

/** How much of an error answer is read: enough for a provider's JSON error, however it is laid out. */
const ERROR_BODY_CHARS = 16_384;
/** How much of an error's text a job's error holds. */
const ERROR_TEXT_CHARS = 300;

/**
 * The longest answer a step takes (its text streamed, or its JSON answered whole), in characters:
 * many times what any model writes in one answer (128k tokens come to about half a MiB), and well
 * within what an object can hold in memory while it writes the answer out.
 */
const ANSWER_MAX_CHARS = 4 * 1024 * 1024;
const answerTooLarge = () => new StepFailed(`Model answer too large: more than ${ANSWER_MAX_CHARS} characters; the request was stopped`);

/**
 * The start of a body, up to `chars` characters, as much of it as comes within `withinMs`; the rest
 * is not read, and the request is let go (a gateway's answer may be large, trickle, stall or never
 * end). A body that breaks gives what came of it.
 */
async function bodyStart(res: Response, chars: number, withinMs: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  // Letting go of the body ends the read waiting on it: what came is the text.
  const deadline = setTimeout(() => reader.cancel().catch(() => {}), withinMs);
  let text = "";
  try {
    for (let piece = await reader.read(); !piece.done; piece = await reader.read()) {
      text += piece.value;
      if (text.length >= chars) break;
    }
  } catch {
    // broken part-way: what came
  } finally {
    clearTimeout(deadline);
    reader.cancel().catch(() => {});
  }
  return text.slice(0, chars);
}

/**
 * What an error answer says: its JSON error's message, else the start of its text, else its status
 * text. Only what comes within `withinMs` is read.
 */
async function errorText(res: Response, withinMs: number): Promise<string> {
  const body = await bodyStart(res, ERROR_BODY_CHARS, withinMs);
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string } | string };
    const message = typeof parsed.error === "string" ? parsed.error : parsed.error?.message;
    if (typeof message === "string" && message) return message.slice(0, ERROR_TEXT_CHARS);
  } catch {
    // not JSON: the text itself
  }
  return body.slice(0, ERROR_TEXT_CHARS) || res.statusText;
}

/** Maps a non-2xx answer (its error text read already) to a failure: retried where another try can succeed. */
function providerError(res: Response, detail: string): Error {
  const message = `${refusalName(res.status)}: ${detail}`;
  return triedAgain(res) ? new TransientError(message, waitAsked(res)) : new StepFailed(message);
}

/** How a refusal is named in a job's error, by its status. */
function refusalName(status: number): string {
  if (status === 401 || status === 403) return `Model provider refused the credentials (${status})`;
  if (status === 429) return "Model provider rate limit (429)";
  if (retriedStatus(status)) return `Model provider error (${status})`;
  return `Model provider rejected the request (${status})`;
}

/** What OpenAI's SDKs try again: a timeout (408), a conflict (409), a rate limit (429) and a server's error (5xx). */
const retriedStatus = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;

/**
 * Whether another try may succeed, as OpenAI's SDKs judge it: as the answer says where it says so
 * (`x-should-retry: true` or `false`, which OpenAI's API sends), else by its status
 * (`retriedStatus`). A try again waits what the answer asks.
 */
function triedAgain(res: Response): boolean {
  const said = res.headers.get("x-should-retry")?.trim().toLowerCase();
  if (said === "true") return true;
  if (said === "false") return false;
  return retriedStatus(res.status);
}

/** The chat-completions request a step sends, before the changes its endpoint asked for. */
type ChatRequest = Record<string, unknown>;

/**
 * What some endpoints refuse in a request that others need: the field, the refusal that names it
 * (a 400 or 422) and the change that answers it. A refused request that holds the field is sent
 * again changed; the endpoint and model (`<endpoint URL> <model>`) are asked so from then on, in this
 * isolate.
 */
const ADAPTATIONS = {
  // Azure's older API versions and some gateways reject OpenAI's `stream_options`: the usage is
  // estimated then, unless they send it anyway.
  withoutStreamOptions: {
    field: "stream_options",
    refusal: /stream_options/i,
    change: ({ stream_options: _, ...rest }: ChatRequest): ChatRequest => rest,
  },
  // OpenAI's reasoning models (o1, o3, gpt-5) take the same limit only under its newer name:
  // "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
  maxCompletionTokens: {
    field: "max_tokens",
    refusal: /max_tokens[\s\S]*max_completion_tokens/,
    change: ({ max_tokens, ...rest }: ChatRequest): ChatRequest => (max_tokens === undefined ? rest : { ...rest, max_completion_tokens: max_tokens }),
  },
};
type Adaptation = keyof typeof ADAPTATIONS;

const adaptedEndpoints = new Map<string, Set<Adaptation>>();

/** The change a refusal asks for, of a field the request holds; null for a refusal no change answers. */
function adaptationFor(res: Response, detail: string, request: ChatRequest): Adaptation | null {
  if (res.status !== 400 && res.status !== 422) return null;
  for (const [name, { field, refusal }] of Object.entries(ADAPTATIONS) as [Adaptation, (typeof ADAPTATIONS)[Adaptation]][]) {
    if (field in request && refusal.test(detail)) return name;
  }
  return null;
}

function remember(endpoint: string, made: Set<Adaptation>): void {
  if (!adaptedEndpoints.has(endpoint) && adaptedEndpoints.size >= 1000) adaptedEndpoints.clear();
  adaptedEndpoints.set(endpoint, made);
}

const adapted = (request: ChatRequest, made: Set<Adaptation>) => [...made].reduce((body, name) => ADAPTATIONS[name].change(body), request);

/** The provider's own counts, from the chunk that carries them (`stream_options.include_usage`). */
interface ProviderUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
}

/** A completion read whole: its text, the provider's usage when it sent one, and why the model stopped. */
interface Completion {
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
async function readCompletion(
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
async function readWholeCompletion(body: ReadableStream<Uint8Array>, idleTimeoutMs: number, signal: AbortSignal): Promise<Completion> {
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

/** The model a job's steps ask for: its config's choice, else the deployment's. */
export function chosenModel(config: Record<string, unknown>, settings: ModelSettings): string {
  return typeof config.model === "string" ? config.model : settings.model;
}

/**
 * Where a base URL's chat completions are: its path and `/chat/completions` (a path that ends so
 * already is the endpoint itself), its query kept, as Azure OpenAI's deployments need their
 * `?api-version=`.
 */
function completionsUrl(baseUrl: string): string {
  const url = new URL(baseUrl);
  const path = url.pathname.replace(/\/+$/, "");
  url.pathname = path.endsWith("/chat/completions") ? path : `${path}/chat/completions`;
  return url.href;
}

/** The header that carries the provider's key: `Authorization: Bearer`, or the one the settings name, holding the key as it is. */
function keyHeader(settings: ModelSettings): Record<string, string> {
  if (!settings.apiKey) return {};
  return settings.apiKeyHeader ? { [settings.apiKeyHeader]: settings.apiKey } : { authorization: `Bearer ${settings.apiKey}` };
}

/** A step's request, the model it names and an estimate of its prompt's tokens (checked against the budget before it is sent). */
function chatRequest(task: AgentTask, input: StepInput, settings: ModelSettings): { request: ChatRequest; model: string; promptTokens: number } {
  const { config } = input;
  const messages = taskMessages(task, input.prompt, input.context ?? [], input.revision);
  const model = chosenModel(config, settings);
  const request: ChatRequest = {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    ...(typeof config.temperature === "number" ? { temperature: config.temperature } : {}),
    ...(typeof config.max_tokens === "number" ? { max_tokens: config.max_tokens } : {}),
  };
  return { request, model, promptTokens: estimateTokens(messages.reduce((n, m) => n + m.content.length, 0)) };
}

/**
 * Sends a step's request, changed as its endpoint asked before (`endpoint`: URL and model) and
 * again while a refusal names a change that answers it (ADAPTATIONS). The answer, once the
 * endpoint took the request; a failure otherwise, named by as much of the error answer as comes
 * within `idleTimeoutMs`. `caller`: the job's own signal, whose reason a request it stopped fails with.
 */
async function send(url: string, endpoint: string, request: ChatRequest, headers: Record<string, string>, idleTimeoutMs: number, signal: AbortSignal, caller: AbortSignal): Promise<Answer> {
  const post = async (made: Set<Adaptation>): Promise<Response> => {
    try {
      return await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "text/event-stream", ...headers },
        body: JSON.stringify(adapted(request, made)),
        signal,
      });
    } catch (error) {
      if (caller.aborted) throw caller.reason;
      throw new TransientError(`Model provider unreachable: ${messageOf(error)}`);
    }
  };
  const made = new Set(adaptedEndpoints.get(endpoint));
  let res = await post(made);
  while (!res.ok || !res.body) {
    const detail = await errorText(res, idleTimeoutMs);
    const next = adaptationFor(res, detail, adapted(request, made));
    if (next === null) throw providerError(res, detail);
    made.add(next);
    remember(endpoint, new Set(made));
    res = await post(made);
  }
  if (contentType(res).startsWith("text/html")) {
    await res.body.cancel();
    throw new StepFailed("Model endpoint answered a web page (text/html), not chat completions: MODEL_BASE_URL must be the API's base URL, up to and excluding /chat/completions");
  }
  return res as Answer;
}

/** An answer the endpoint took the request with: it has a body. */
type Answer = Response & { body: ReadableStream<Uint8Array> };

const contentType = (res: Response) => (res.headers.get("content-type") ?? "").toLowerCase();

/**
 * Reads the answer, streamed or `whole` (JSON), handing the streamed text on. The budget is checked on
 * estimates while the answer streams (the provider's counts come only at its end): the request is
 * stopped (`stop`) as soon as the estimate would pass it, or the text passes ANSWER_MAX_CHARS.
 * Every call that got an answer is counted once, also one that broke or was stopped: by the
 * provider's counts where it sent them.
 */
async function readAnswer(res: Answer, whole: boolean, input: StepInput, promptTokens: number, idleTimeoutMs: number, stop: AbortController, signal: AbortSignal): Promise<Completion> {
  let streamed = 0;
  const estimate = (): CallUsage => ({ prompt_tokens: promptTokens, completion_tokens: estimateTokens(streamed), estimated: true });
  let completion: Completion;
  try {
    if (whole) {
      completion = await readWholeCompletion(res.body, idleTimeoutMs, signal);
      streamed = completion.text.length;
    } else {
      completion = await readCompletion(
        res.body,
        idleTimeoutMs,
        (delta) => {
          streamed += delta.length;
          if (streamed > ANSWER_MAX_CHARS) stop.abort(answerTooLarge());
          else if (overBudget(input.budget, promptTokens, estimateTokens(streamed))) stop.abort(new BudgetExceeded("token budget"));
          else input.onDelta?.(delta);
        },
        signal,
      );
    }
  } catch (error) {
    input.onUsage?.(estimate());
    throw error;
  }
  const usage = completion.usage;
  const exact = typeof usage?.prompt_tokens === "number" && typeof usage.completion_tokens === "number";
  const counts = exact ? { prompt_tokens: usage.prompt_tokens!, completion_tokens: usage.completion_tokens!, estimated: false } : estimate();
  input.onUsage?.(counts);
  if (overBudget(input.budget, counts.prompt_tokens, counts.completion_tokens)) throw new BudgetExceeded("token budget");
  return completion;
}

export function openAiRunner(settings: ModelSettings): Runner {
  const url = completionsUrl(settings.baseUrl);
  const credentials = keyHeader(settings);
  return {
    name: "openai-compatible",
    async runStep(input: StepInput): Promise<StepOutput> {
      const task = input.agentTask;
      if (!task) throw new StepFailed(`Step ${input.task} has no agent task`);
      const { request, model, promptTokens } = chatRequest(task, input, settings);
      if (overBudget(input.budget, promptTokens, 0)) throw new BudgetExceeded("token budget");
      const stop = new AbortController();
      const signal = AbortSignal.any([input.signal, stop.signal]);
      const res = await send(url, `${url} ${model}`, request, credentials, settings.idleTimeoutMs, signal, input.signal);
      const whole = contentType(res).startsWith("application/json");
      const completion = await readAnswer(res, whole, input, promptTokens, settings.idleTimeoutMs, stop, signal);
      const bytes = encoder.encode(completion.text);
      return {
        bytes: bytes.length,
        // A whole answer's text has not gone out yet: the step's output event carries it.
        streamed: !whole,
        finishReason: completion.finishReason,
        body: new ReadableStream({
          start(controller) {
            controller.enqueue(bytes);
            controller.close();
          },
        }),
      };
    },
  };
}
