/** scripts/patch-test-pool.mjs: the pinned test pool's fix, applied once, and never to a file it does not know. */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BEFORE, FIXED, POOL_FILE } from "../../scripts/patch-test-pool.mjs";

const dir = mkdtempSync(join(tmpdir(), "test-pool-"));
const installed = readFileSync(POOL_FILE, "utf8");

function patch(text: string) {
  const file = join(dir, `${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, text);
  const run = spawnSync("node", ["scripts/patch-test-pool.mjs", file], { encoding: "utf8" });
  return { status: run.status, out: `${run.stdout}${run.stderr}`, text: readFileSync(file, "utf8") };
}

describe("the test pool's fix", () => {
  it("is in the pool as npm installed it", () => {
    expect(installed).toContain(FIXED);
    expect(installed).not.toContain(BEFORE);
  });

  it("turns the pool's file as published into the one installed", () => {
    const published = installed.replace(FIXED, BEFORE);
    expect(published).not.toBe(installed);
    const { status, out, text } = patch(published);
    expect(status).toBe(0);
    expect(out).toMatch(/installed once/);
    expect(text).toBe(installed);
  });

  it("leaves a file that has it as it is", () => {
    const { status, out, text } = patch(installed);
    expect(status).toBe(0);
    expect(out).toBe("");
    expect(text).toBe(installed);
  });

  it("fails on a file it was not written for, and leaves it as it is", () => {
    const other = installed.replace(FIXED, "\tfunction Class() {}");
    const { status, out, text } = patch(other);
    expect(status).toBe(1);
    expect(out).toMatch(/is not the file this fix was written for/);
    expect(text).toBe(other);
  });
});
