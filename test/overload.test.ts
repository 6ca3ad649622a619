/**
 * An object the platform reports as overloaded (an error whose `overloaded` is true), or a call
 * whose failure it reports as passing (`retryable`, `durableObjectReset`), makes the request
 * answer 503 with Retry-After, on every kind of object a request reaches.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../src/app";
import { overlay } from "./faults";

function failingWith<N extends object>(namespace: N, error: Error): N {
  return new Proxy(namespace, {
    get(obj, prop) {
      if (prop !== "getByName") return Reflect.get(obj, prop);
      return () => new Proxy({}, { get: () => async () => Promise.reject(error) });
    },
  });
}

const request = (method: string) =>
  method === "POST" ? { method, headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x" }) } : { method };

const cases = [
  ["a job's object", "RUNS", "GET", "/api/v1/runs/run_overloaded"],
  ["the tenant's line", "LINES", "POST", "/api/v1/runs"],
  ["the tenant's projection", "PROJECTIONS", "GET", "/api/v1/runs"],
] as const;

describe("overloaded objects", () => {
  it.each(cases)("%s → 503 with Retry-After, never a 500", async (_name, binding, method, path) => {
    const error = Object.assign(new Error("Durable Object is overloaded. Too many requests queued."), { overloaded: true });
    const overloaded = overlay(env, { [binding]: failingWith(env[binding], error) });
    const res = await app.request(`http://localhost${path}`, request(method), overloaded);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ detail: "Service overloaded; retry shortly" });
    expect(res.headers.get("Retry-After")).toBe("1");
  });
});

// What workerd and Cloudflare throw: a connection lost (`retryable`), an object reset by a failure of its storage.
const transient = [
  ["a connection lost", { retryable: true }, "Network connection lost."],
  ["an object reset", { durableObjectReset: true }, "out of memory: SQLITE_NOMEM"],
] as const;

describe("failures the platform reports as passing", () => {
  it.each(transient.flatMap(([what, flags, message]) => cases.map(([name, binding, method, path]) => [what, name, flags, message, binding, method, path] as const)))(
    "%s on %s → 503 with Retry-After, never a 500",
    async (_what, _name, flags, message, binding, method, path) => {
      const failed = overlay(env, { [binding]: failingWith(env[binding], Object.assign(new Error(message), flags)) });
      const res = await app.request(`http://localhost${path}`, request(method), failed);
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({ detail: "Service unavailable; retry shortly" });
      expect(res.headers.get("Retry-After")).toBe("1");
    },
  );
});
