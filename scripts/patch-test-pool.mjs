#!/usr/bin/env node
// The test pool pinned here (@cloudflare/vitest-pool-workers 0.15.1, which Node 20 pins) wraps
// the Worker's entrypoint and each Durable Object class so that tests can reach them, and wraps
// the wrapper's prototype in one more Proxy every time workerd constructs the wrapper: for every
// request the Worker serves and every object made. A property read then passes through one
// proxy for each construction so far in the test file. So each request of a file costs more than
// the one before, and past some thousands a read overflows the stack (`RangeError: Maximum call
// stack size exceeded`). Upstream fixed it (cloudflare/workers-sdk#15092, in #15106) in versions
// that need a newer Node. This applies that fix to the pinned file: the proxy is installed once.
//
// npm runs it after every install (`postinstall`). Run again, it changes nothing. It fails if the
// file holds neither the code it replaces nor its fix, and vitest.config.ts will not run the tests
// on a pool without the fix. `node scripts/patch-test-pool.mjs [file]` patches another copy.
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const POOL_FILE = fileURLToPath(
  new URL("../node_modules/@cloudflare/vitest-pool-workers/dist/worker/lib/cloudflare/test-internal.mjs", import.meta.url),
);

const TRAP = `{ get(target, key, receiver) {
			const value = Reflect.get(target, key, receiver);
			if (value !== void 0) return value;
			if (typeof key === "symbol" || IGNORED_KEYS.includes(key)) return;
			return getUnknownPrototypeKey.call(receiver, key);
		} }`;
export const BEFORE = `	function Class(...args) {
		Class.prototype = new Proxy(Class.prototype, ${TRAP});
		return Reflect.construct(superClass, args, Class);
	}`;
export const FIXED = `	let proxyInstalled = false;
	function Class(...args) {
		if (!proxyInstalled) {
			Class.prototype = new Proxy(Class.prototype, ${TRAP});
			proxyInstalled = true;
		}
		return Reflect.construct(superClass, args, Class);
	}`;

/** Whether the pool's file carries the fix. */
export const poolFixed = () => readFileSync(POOL_FILE, "utf8").includes(FIXED);

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2] ?? POOL_FILE;
  const text = readFileSync(file, "utf8");
  if (!text.includes(FIXED)) {
    if (!text.includes(BEFORE)) {
      console.error(`${file} is not the file this fix was written for: compare it with scripts/patch-test-pool.mjs`);
      process.exit(1);
    }
    writeFileSync(file, text.replace(BEFORE, FIXED));
    console.log("test pool: its wrapper's prototype proxy is installed once (cloudflare/workers-sdk#15092)");
  }
}
