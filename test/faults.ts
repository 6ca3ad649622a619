/**
 * Faults and barriers around the real bindings, installed into one live RunObject from the test
 * (runInDurableObject): the object keeps talking to real R2 and the real tenant objects, and the
 * wrapper fails or holds the calls a test names.
 */
import { runInDurableObject } from "cloudflare:test";
import { runStub } from "./helpers";

export type When = "before" | "after";

/** Wraps `target` so that the listed calls (1-based, per method) of `method` fail, before or after the real call. */
export function failing<T extends object>(target: T, method: string, calls: number[], when: When) {
  const counts = { n: 0 };
  const proxy = new Proxy(target, {
    get(obj, prop) {
      const value = Reflect.get(obj, prop);
      if (typeof value !== "function") return value;
      if (prop !== method) return value.bind(obj);
      return async (...args: unknown[]) => {
        const call = ++counts.n;
        if (!calls.includes(call)) return value.apply(obj, args);
        if (when === "after") await value.apply(obj, args);
        throw new Error(`injected ${String(prop)} failure on call ${call} (${when} its effect)`);
      };
    },
  });
  return { proxy, counts };
}

/**
 * The error Cloudflare throws for a call whose object was reset before it answered (its storage
 * failed, it was moved or updated): the call may have done its work.
 */
export const resetError = (message: string) => Object.assign(new Error(message), { durableObjectReset: true });

/** The job id in a job object's name, `<tenant>/<job id>`. */
export const jobIdOf = (objectName: string) => objectName.slice(objectName.indexOf("/") + 1);

type Namespace = Env["PROJECTIONS"] | Env["LINES"] | Env["RUNS"];

/**
 * A Durable Object namespace whose stubs hand each call of `method` to `around`, with the name of
 * the object called and the real call, to make or not.
 */
function aroundStubs<N extends Namespace>(namespace: N, method: string, around: (name: string, real: () => Promise<unknown>) => Promise<unknown>): N {
  return new Proxy(namespace, {
    get(obj, prop) {
      const value = Reflect.get(obj, prop);
      if (prop !== "getByName") return typeof value === "function" ? value.bind(obj) : value;
      return (name: string) => {
        const stub = obj.getByName(name);
        return new Proxy(stub, {
          get(s, p) {
            if (p !== method) return Reflect.get(s, p);
            return (...args: unknown[]) => around(name, () => (Reflect.get(s, p) as (...a: unknown[]) => Promise<unknown>)(...args));
          },
        });
      };
    },
  });
}

/**
 * A Durable Object namespace (a tenant object's, the jobs') whose stubs fail the listed calls of
 * `method`, with the error `makeError` makes of a message. `names`: the objects `method` was
 * called on, in order.
 */
export function failingStubs<N extends Namespace>(
  namespace: N,
  method: string,
  calls: number[],
  when: When,
  makeError: (message: string) => Error = (message) => new Error(message),
) {
  const counts = { n: 0 };
  const names: string[] = [];
  const proxy = aroundStubs(namespace, method, async (name, real) => {
    const call = ++counts.n;
    names.push(name);
    if (!calls.includes(call)) return real();
    if (when === "after") await real();
    throw makeError(`injected ${method} failure on call ${call} (${when} its effect)`);
  });
  return { proxy, counts, names };
}

/**
 * A Durable Object namespace whose stubs hold every call of `method` at a gate the test opens,
 * then make it (or, with `fail`, fail it without making it). `reached`: a call is at the gate.
 */
export function gatedStubs<N extends Namespace>(namespace: N, method: string, fail = false) {
  let open!: () => void;
  let arrived!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const reached = new Promise<void>((r) => (arrived = r));
  const proxy = aroundStubs(namespace, method, async (_name, real) => {
    arrived();
    await gate;
    if (fail) throw new Error(`injected ${method} failure at the gate`);
    return real();
  });
  return { proxy, open, reached };
}

/**
 * A Durable Object namespace whose stubs record every call made through them, as `<name>.<method>`
 * (or `<name>:<object name>.<method>`).
 */
export function countingStubs<N extends Namespace>(namespace: N, name: string, calls: string[], withObjectName = false) {
  return new Proxy(namespace, {
    get(obj, prop) {
      const value = Reflect.get(obj, prop);
      if (prop !== "getByName") return typeof value === "function" ? value.bind(obj) : value;
      return (objectName: string) => {
        const stub = obj.getByName(objectName);
        return new Proxy(stub, {
          get(s, p) {
            const member = Reflect.get(s, p);
            if (typeof p !== "string" || typeof member !== "function" || p === "fetch") return member;
            return (...args: unknown[]) => {
              calls.push(withObjectName ? `${name}:${objectName}.${p}` : `${name}.${p}`);
              return (member as (...a: unknown[]) => unknown)(...args);
            };
          },
        });
      };
    },
  });
}

/** A bucket whose `put` waits at a gate the test opens. `keys`: the keys put, in order. */
export function gatedBucket(bucket: R2Bucket) {
  let open!: () => void;
  let arrived!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const reached = new Promise<void>((r) => (arrived = r));
  const keys: string[] = [];
  const proxy = new Proxy(bucket, {
    get(obj, prop) {
      const value = Reflect.get(obj, prop);
      if (typeof value !== "function") return value;
      if (prop !== "put") return value.bind(obj);
      return async (...args: unknown[]) => {
        keys.push(args[0] as string);
        arrived();
        await gate;
        return value.apply(obj, args);
      };
    },
  });
  return { proxy, open, reached, keys };
}

type Target = string | DurableObjectStub<Rpc.DurableObjectBranded>;
const stubOf = (target: Target) => (typeof target === "string" ? runStub(target) : target);

/**
 * `env` with some bindings replaced. Defined, not assigned: an assignment would reach the
 * prototype's own set trap when `env` is a proxy, and change the original for everyone.
 */
export function overlay(env: Env, overrides: Partial<Env>): Env {
  const descriptors = Object.fromEntries(Object.entries(overrides).map(([key, value]) => [key, { value, enumerable: true }]));
  return Object.create(env, descriptors) as Env;
}

/** Replaces bindings of a live object, the job's (by id) or any other (by stub), until it is evicted or restored. */
export async function withBindings(target: Target, overrides: Partial<Env>): Promise<void> {
  await runInDurableObject(stubOf(target), (instance) => {
    const holder = instance as unknown as { env: Env };
    holder.env = overlay(holder.env, overrides);
  });
}

export async function restoreBindings(target: Target): Promise<void> {
  await runInDurableObject(stubOf(target), (instance) => {
    const holder = instance as unknown as { env: Env };
    const original = Object.getPrototypeOf(holder.env) as Env;
    if (original !== Object.prototype) holder.env = original;
  });
}
