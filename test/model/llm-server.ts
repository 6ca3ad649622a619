/**
 * A real local HTTP server speaking the OpenAI chat-completions streaming protocol, started by
 * vitest (globalSetup, in Node) for the `workers-peers` project. The request's `model` picks how
 * it answers; every request is recorded and served back at GET /_requests.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { loopbackServer } from "../local-server";

import { answerFor, CONTEXT_TOO_LONG, ENDLESS_ERROR_PAGE, LLM_KEY, LLM_PORT, LLM_URL, usageFor, type RecordedRequest as Recorded } from "./protocol";


const requests: Recorded[] = [];
const attemptsByTopic = new Map<string, number>();

function sse(res: ServerResponse, payload: unknown) {
  res.write(`data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`);
}

const chunk = (content: string, finish: string | null = null) => ({
  id: "chatcmpl-test",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta: finish ? {} : { content }, finish_reason: finish }],
});

/**
 * Streams the pieces, then the finish; then, when the request asked for it and `usage` is not
 * "omit", a last chunk with the usage (no choices), as OpenAI sends it.
 */
async function stream(res: ServerResponse, record: Recorded, pieces: string[], delayMs: number, usage: "send" | "omit" = "send", finish = "stop") {
  res.writeHead(200, { "content-type": "text/event-stream" });
  for (const piece of pieces) {
    if (record.closedEarly) return;
    sse(res, chunk(piece));
    record.piecesSent++;
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
  }
  if (record.closedEarly) return;
  sse(res, chunk("", finish));
  if (usage === "send" && record.body.stream_options?.include_usage) {
    const counts = usageFor(record.body.messages.length, pieces.length);
    sse(res, { id: "chatcmpl-test", object: "chat.completion.chunk", choices: [], usage: { ...counts, total_tokens: counts.prompt_tokens + counts.completion_tokens } });
  }
  sse(res, "[DONE]");
  record.finished = true;
  res.end();
}

/**
 * An event-stream block written another way the format allows, as a gateway may relay it: a
 * comment first, no space after a field's colon, a JSON value broken over two `data` lines after
 * its first comma, line ends taking turns at CRLF, CR and LF (`n`), and the block written in two
 * writes cut after its first CR, so that a CRLF may come in two reads.
 */
function relayedSse(res: ServerResponse, payload: unknown, n: number) {
  const eol = ["\r\n", "\r", "\n"][n % 3];
  const data = typeof payload === "string" ? payload : JSON.stringify(payload);
  const comma = data.indexOf(",");
  const lines = [": relayed", ...(comma > 0 ? [`data:${data.slice(0, comma + 1)}`, `data:${data.slice(comma + 1)}`] : [`data:${data}`])];
  const text = lines.join(eol) + eol + eol;
  const cut = text.indexOf("\r") + 1 || text.length;
  res.write(text.slice(0, cut));
  res.write(text.slice(cut));
}

function split(text: string, size: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

/** An error answer, as OpenAI's API sends one: `status`, `headers` and the JSON `error`. */
function refuse(res: ServerResponse, status: number, error: Record<string, unknown>, headers: Record<string, string> = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify({ error }));
}

function notFound(res: ServerResponse, message: string) {
  refuse(res, 404, { code: "404", message });
}

async function handle(req: IncomingMessage, res: ServerResponse) {
  if (req.method === "GET" && req.url === "/_requests") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(requests));
  }
  if (req.method === "POST" && req.url === "/_reset") {
    requests.length = 0;
    attemptsByTopic.clear();
    return res.end("{}");
  }
  let raw = "";
  for await (const part of req) raw += part;
  const body = JSON.parse(raw) as { model: string; messages: { role: string; content: string }[] };
  const user = body.messages.find((m) => m.role === "user")?.content ?? "";
  const topic = /^Topic: (.*)$/m.exec(user)?.[1] ?? "";
  const task = /^Task: (.*)$/m.exec(user)?.[1] ?? "";
  const record: Recorded = { url: req.url ?? "", model: body.model, topic, body, at: Date.now(), closedEarly: false, finished: false, piecesSent: 0 };
  requests.push(record);
  res.on("close", () => {
    if (!record.finished) record.closedEarly = true;
  });
  const attempt = (attemptsByTopic.get(topic) ?? 0) + 1;
  attemptsByTopic.set(topic, attempt);

  const url = new URL(req.url ?? "/", LLM_URL);
  // An Azure OpenAI deployment: its name in the path, the API version in the query, the key in `api-key`.
  const azure = /^\/openai\/deployments\/[^/]+\/chat\/completions$/.test(url.pathname);
  if (!azure && url.pathname !== "/v1/chat/completions") return notFound(res, `No route for ${url.pathname}`);
  if (azure && !url.searchParams.has("api-version")) return notFound(res, "Resource not found");
  const key = azure ? req.headers["api-key"] : req.headers.authorization?.replace(/^Bearer /, "");
  if (key !== LLM_KEY || body.model === "bad-key") return refuse(res, 401, { message: "Incorrect API key provided" });
  const answer = answerFor(task, topic);
  /** The first attempt refused (`refuse`'s arguments), the next answered. */
  const refusedOnce = (...refusal: Parameters<typeof refuse>) => (attempt === 1 ? refuse(...refusal) : stream(res, record, split(answer, 7), 0));
  switch (body.model) {
    case "echo":
      return stream(res, record, split(answer, 7), 2);
    case "no-usage":
      return stream(res, record, split(answer, 7), 0, "omit");
    case "verbose":
      // A long answer, a piece every 5 ms: what a token budget stops midway.
      return stream(res, record, split(answer.repeat(100), 20), 5);
    case "slow":
      return stream(res, record, split(answer.repeat(10), 5), 100);
    case "stall":
      res.writeHead(200, { "content-type": "text/event-stream" });
      sse(res, chunk("Thinking"));
      return; // and never another byte
    case "rate-limited-once":
      return refusedOnce(res, 429, { message: "Rate limit reached" }, { "retry-after": "1" });
    case "unavailable-once":
      // A 503 that says when to come back.
      return refusedOnce(res, 503, { message: "The engine is currently overloaded" }, { "retry-after": "1" });
    case "rate-limited-ms-once":
      // A 429 that says when to come back in milliseconds, as OpenAI's `retry-after-ms`.
      return refusedOnce(res, 429, { message: "Rate limit reached" }, { "retry-after-ms": "1200" });
    case "final-503":
      // A 503 that says another try would not help, as OpenAI's API can.
      return refuse(res, 503, { message: "This deployment is being retired" }, { "x-should-retry": "false" });
    case "retry-400-once":
      // A 400 that says another try may succeed.
      return refusedOnce(res, 400, { message: "Could not parse the request; please retry" }, { "x-should-retry": "true" });
    case "request-timeout-once":
      // A 408: the server gave up waiting for the request, and another may get through.
      return refusedOnce(res, 408, { message: "Request timed out" });
    case "server-error":
      return refuse(res, 503, { message: "The server is overloaded" });
    case "server-error-once":
      return refusedOnce(res, 500, { message: "Internal error" });
    case "malformed":
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: {this is not json\n\n");
      return res.end();
    case "null-chunk":
      // A data line whose JSON is no chunk.
      res.writeHead(200, { "content-type": "text/event-stream" });
      sse(res, "null");
      return res.end();
    case "error-mid-stream":
      // An error reported after the answer began, the connection then held open: only the client ends it.
      res.writeHead(200, { "content-type": "text/event-stream" });
      sse(res, chunk("Thinking"));
      sse(res, { error: { message: "Upstream overloaded", type: "server_error" } });
      return;
    case "long-error":
      // A refusal laid out over many lines, longer than the text a job's error holds, as OpenAI's are.
      res.writeHead(400, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { message: CONTEXT_TOO_LONG, type: "invalid_request_error", param: "messages", code: "context_length_exceeded", details: Array(20).fill("padding") } }, null, 2));
    case "odd-error":
      // An error whose message is no text: the answer's own text names it.
      return refuse(res, 503, { message: { text: "busy" } });
    case "endless-error": {
      // A gateway's error page that never ends: only the client stops it.
      res.writeHead(502, { "content-type": "text/html" });
      res.write(ENDLESS_ERROR_PAGE);
      const more = setInterval(() => (record.closedEarly ? clearInterval(more) : res.write("<p>retrying upstream</p>".repeat(40))), 10);
      return;
    }
    case "relayed": {
      // The answer as a gateway that writes event streams its own way relays it, with the usage.
      res.writeHead(200, { "content-type": "text/event-stream" });
      const pieces = split(answer, 7);
      const counts = usageFor(body.messages.length, pieces.length);
      const chunks = [...pieces.map((piece) => chunk(piece)), chunk("", "stop"), { choices: [], usage: { ...counts, total_tokens: counts.prompt_tokens + counts.completion_tokens } }];
      chunks.forEach((c, n) => relayedSse(res, c, n));
      // The end marker ended by one line end, with no blank line after it.
      res.write("data: [DONE]\n");
      record.finished = true;
      return res.end();
    }
    case "error-event":
      // An error sent as an event of its own, the connection then held open.
      res.writeHead(200, { "content-type": "text/event-stream" });
      sse(res, chunk("Thinking"));
      res.write('event: error\ndata: {"message":"Overloaded"}\n\n');
      return;
    case "done-then-held": {
      // The whole answer and its end marker, then the connection held open, as a keep-alive gone wrong.
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const piece of split(answer, 7)) sse(res, chunk(piece));
      sse(res, chunk("", "stop"));
      sse(res, "[DONE]");
      return;
    }
    case "endless": {
      // A stream of text that never ends, as a runaway generation's: only the client stops it.
      res.writeHead(200, { "content-type": "text/event-stream" });
      const piece = "x".repeat(64 * 1024);
      const more = setInterval(() => {
        if (record.closedEarly) return clearInterval(more);
        for (let i = 0; i < 4; i++) sse(res, chunk(piece));
        record.piecesSent += 4;
      }, 5);
      return;
    }
    case "endless-whole": {
      // An answer sent whole whose text never ends.
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"id":"chatcmpl-test","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"');
      const more = setInterval(() => (record.closedEarly ? clearInterval(more) : res.write("x".repeat(256 * 1024))), 5);
      return;
    }
    case "stalled-error":
      // An error answer that stops part-way, the connection held, as a proxy's may.
      res.writeHead(503, { "content-type": "text/plain" });
      res.write("upstream connect error or disconnect/reset before headers. reset reason: overflow");
      return;
    case "trickle-error": {
      // A JSON error, then whitespace a byte at a time that never ends: only the client stops it.
      res.writeHead(502, { "content-type": "application/json" });
      res.write(JSON.stringify({ error: { message: "Bad gateway" } }));
      const more = setInterval(() => (record.closedEarly ? clearInterval(more) : res.write("\n")), 100);
      return;
    }
    case "reset":
      return req.socket.destroy();
    case "broken-once":
      // The first attempt's stream breaks after its first piece; the next is whole.
      if (attempt === 1) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        sse(res, chunk(answer.slice(0, 7)));
        return void setTimeout(() => req.socket.destroy(), 50);
      }
      return stream(res, record, split(answer, 7), 0);
    case "no-stream-options":
      // As Azure's older API versions and some gateways answer OpenAI's stream_options.
      if (record.body.stream_options) return refuse(res, 400, { message: "Unrecognized request argument supplied: stream_options", type: "invalid_request_error" });
      return stream(res, record, split(answer, 7), 0, "omit");
    case "reasoning":
      // As OpenAI answers `max_tokens` for its reasoning models (o1, o3, gpt-5).
      if (record.body.max_tokens !== undefined) {
        return refuse(res, 400, {
          message: "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
          type: "invalid_request_error",
          param: "max_tokens",
          code: "unsupported_parameter",
        });
      }
      return stream(res, record, split(answer, 7), 0);
    case "cut-short":
      // Stopped by its max_tokens: the usual end, but `length` for the finish.
      return stream(res, record, split(answer, 7), 0, "send", "length");
    case "filtered":
      return stream(res, record, split(answer, 7), 0, "send", "content_filter");
    case "whole": {
      // Answered whole, as JSON, although the request asked for a stream.
      const counts = usageFor(body.messages.length, 1);
      res.writeHead(200, { "content-type": "application/json" });
      record.finished = true;
      return res.end(
        JSON.stringify({
          id: "chatcmpl-test",
          object: "chat.completion",
          choices: [{ index: 0, message: { role: "assistant", content: answer }, finish_reason: "stop" }],
          usage: { ...counts, total_tokens: counts.prompt_tokens + counts.completion_tokens },
        }),
      );
    }
    case "whole-stall":
      // Answered whole, but the answer stops part-way and the connection is held.
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"id":"chatcmpl-test","object":"chat.completion",');
      return;
    case "whole-broken":
      // Answered whole, but the connection breaks part-way through the answer.
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"id":"chatcmpl-test","object":"chat.completion",');
      return void setTimeout(() => req.socket.destroy(), 50);
    case "whole-error":
      // A 200 that carries an error, as some gateways answer.
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { message: "Upstream provider timed out", code: 502 } }));
    case "not-a-completion":
      // JSON of another endpoint (a list of models, say).
      res.writeHead(200, { "content-type": "application/json; charset=utf-8" });
      return res.end(JSON.stringify({ object: "list", data: [] }));
    case "web-page":
      // A base URL that reaches a website, not the API.
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      return res.end("<!doctype html><html><body>Welcome</body></html>");
    default:
      return refuse(res, 404, { message: `The model ${body.model} does not exist` });
  }
}

export const { setup, teardown } = loopbackServer(LLM_PORT, handle);
