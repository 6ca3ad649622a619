/**
 * Runs a step on any OpenAI-compatible chat-completions endpoint (OpenAI, Workers AI's
 * OpenAI-compatible endpoint, vLLM, Ollama, LiteLLM), streaming the answer (or reading it whole
 * where the server answers JSON instead).
 */
import type { ModelSettings } from "../../config";
import { messageOf } from "../../errors";
import { taskMessages } from "../agents";
import { BudgetExceeded, estimateTokens, overBudget, StepFailed, TransientError, type AgentTask, type CallUsage, type Runner, type StepInput, type StepOutput } from "../types";
import { adaptationFor, adaptationsOf, adapted, remember, type Adaptation, type ChatRequest } from "./adaptations";
import { ANSWER_MAX_CHARS, answerTooLarge, readCompletion, readWholeCompletion, type Completion } from "./completion";
import { errorText, providerError } from "./refusals";

const encoder = new TextEncoder();

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
  const made = adaptationsOf(endpoint);
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
