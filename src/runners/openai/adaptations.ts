/**
 * The changes some endpoints need of a chat-completions request, learnt from their refusals and
 * remembered per endpoint and model, in this isolate.
 */

/** The chat-completions request a step sends, before the changes its endpoint asked for. */
export type ChatRequest = Record<string, unknown>;

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
export type Adaptation = keyof typeof ADAPTATIONS;

const adaptedEndpoints = new Map<string, Set<Adaptation>>();

/** The change a refusal asks for, of a field the request holds; null for a refusal no change answers. */
export function adaptationFor(res: Response, detail: string, request: ChatRequest): Adaptation | null {
  if (res.status !== 400 && res.status !== 422) return null;
  for (const [name, { field, refusal }] of Object.entries(ADAPTATIONS) as [Adaptation, (typeof ADAPTATIONS)[Adaptation]][]) {
    if (field in request && refusal.test(detail)) return name;
  }
  return null;
}

/** The changes the endpoint (`<endpoint URL> <model>`) asked for so far: a set of its own, to add to. */
export const adaptationsOf = (endpoint: string): Set<Adaptation> => new Set(adaptedEndpoints.get(endpoint));

/** Remembers the changes the endpoint asked for, for the steps after; past 1,000 endpoints, the others are forgotten. */
export function remember(endpoint: string, made: Set<Adaptation>): void {
  if (!adaptedEndpoints.has(endpoint) && adaptedEndpoints.size >= 1000) adaptedEndpoints.clear();
  adaptedEndpoints.set(endpoint, made);
}

export const adapted = (request: ChatRequest, made: Set<Adaptation>) => [...made].reduce((body, name) => ADAPTATIONS[name].change(body), request);
