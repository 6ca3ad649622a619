/**
 * An object the platform reports as overloaded (an error whose `overloaded` is true) makes the
 * request answer 503 with Retry-After, on every kind of object a request reaches.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../src/app";
import { overlay } from "./faults";

function overloadedStubs<N extends object>(namespace: N): N {
  const error = Object.assign(new Error("Durable Object is overloaded. Too many requests queued."), { overloaded: true });
  return new Proxy(namespace, {
    get(obj, prop) {
      if (prop !== "getByName") return Reflect.get(obj, prop);
      return () => new Proxy({}, { get: () => async () => Promise.reject(error) });
    },
  });
}

const cases = [
  ["a job's object", "RUNS", "GET", "/api/v1/runs/run_overloaded"],
  ["the tenant's line", "LINES", "POST", "/api/v1/runs"],
  ["the tenant's projection", "PROJECTIONS", "GET", "/api/v1/runs"],
] as const;

describe("overloaded objects", () => {
  it.each(cases)("%s → 503 with Retry-After, never a 500", async (_name, binding, method, path) => {
    const overloaded = overlay(env, { [binding]: overloadedStubs(env[binding]) });
    const init = method === "POST" ? { method, headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x" }) } : { method };
    const res = await app.request(`http://localhost${path}`, init, overloaded);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ detail: "Service overloaded; retry shortly" });
    expect(res.headers.get("Retry-After")).toBe("1");
  });
});
