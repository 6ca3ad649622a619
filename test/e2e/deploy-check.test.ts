/** `npm run deploy:check`: a deployment's settings checked offline, naming each bad one, then the bundle and its budget. */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const dir = mkdtempSync(join(tmpdir(), "deploy-check-"));
const KEYS = JSON.stringify({ ["a".repeat(64)]: "acme" });
const WEBHOOK_SECRET = `whsec_${Buffer.from("a-webhook-signing-key-of-32-bytes").toString("base64")}`;
const TOKEN_SECRET = "t".repeat(40);

function check(secrets: unknown, file = "secrets.json") {
  const path = join(dir, file);
  writeFileSync(path, typeof secrets === "string" ? secrets : JSON.stringify(secrets));
  const run = spawnSync("node_modules/.bin/tsx", ["scripts/deploy-check.ts", "--secrets", path], { encoding: "utf8" });
  return { status: run.status, out: `${run.stdout}${run.stderr}` };
}

describe("deploy:check", () => {
  const refused: [string, unknown, RegExp][] = [
    ["API_KEYS that is not JSON", { API_KEYS: "{acme", WEBHOOK_SECRET }, /✗ API_KEYS must be a JSON object .*; it is not JSON/],
    ["no API_KEYS", { WEBHOOK_SECRET }, /✗ API_KEYS is not set/],
    ["a short TOKEN_SECRET", { API_KEYS: KEYS, WEBHOOK_SECRET, TOKEN_SECRET: "too-short" }, /✗ TOKEN_SECRET must be at least 32 characters; it has 9/],
    ["webhooks without WEBHOOK_SECRET", { API_KEYS: KEYS }, /✗ WEBHOOK_SECRET is not set/],
    ["a WEBHOOK_SECRET that is not base64", { API_KEYS: KEYS, WEBHOOK_SECRET: "whsec_???" }, /✗ WEBHOOK_SECRET must be whsec_ followed by base64/],
    ["a misspelt secret", { API_KEYS: KEYS, WEBHOOK_SECRET, WEBHOOK_SECRETS: "x" }, /✗ .*WEBHOOK_SECRETS is no secret this service reads/],
    ["a short TOKEN_SECRET_PREVIOUS", { API_KEYS: KEYS, WEBHOOK_SECRET, TOKEN_SECRET, TOKEN_SECRET_PREVIOUS: "old" }, /✗ TOKEN_SECRET_PREVIOUS must be at least 32 characters; it has 3/],
    ["a previous secret with no current one", { API_KEYS: KEYS, WEBHOOK_SECRET: "", WEBHOOK_SECRET_PREVIOUS: WEBHOOK_SECRET }, /✗ WEBHOOK_SECRET_PREVIOUS is set without WEBHOOK_SECRET: the new secret goes in WEBHOOK_SECRET, the old one in WEBHOOK_SECRET_PREVIOUS/],
    ["a secrets file that is not JSON", "API_KEYS=x", /✗ .* is not JSON/],
  ];

  it.each(refused)("fails on %s, naming the setting, before bundling", (_what, secrets, problem) => {
    const { status, out } = check(secrets);
    expect(status).toBe(1);
    expect(out).toMatch(problem);
    expect(out).toMatch(/nothing was bundled/);
  });

  it("fails when the secrets file is missing", () => {
    const run = spawnSync("node_modules/.bin/tsx", ["scripts/deploy-check.ts", "--secrets", join(dir, "absent.json")], { encoding: "utf8" });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/absent\.json not found/);
  });

  it("passes sound settings, bundles, and reports the code within its budget and the whole within Cloudflare's limit", () => {
    const { status, out } = check({ API_KEYS: KEYS, WEBHOOK_SECRET, TOKEN_SECRET }, "sound.json");
    expect(out).toMatch(/✓ settings \(vars and .*sound\.json\)/);
    const size = /✓ bundle: code ([\d.]+) KiB gzip \(budget 100 KiB\); ([\d.]+) KiB gzip in all with the files bundled beside it \(limit 3072 KiB\)/.exec(out);
    expect(size, out).not.toBeNull();
    const [code, all] = [Number(size![1]), Number(size![2])];
    expect(code).toBeLessThanOrEqual(100);
    // Swagger UI's and the frontend's files are in the upload, not in the code.
    expect(all).toBeGreaterThan(code + 300);
    expect(all).toBeLessThanOrEqual(3072);
    expect(status).toBe(0);
  });

  it("the README's steps from nothing: make-secrets, then mint-key --into twice, make a file that passes", () => {
    const file = join(dir, "minted.json");
    for (let i = 0; i < 2; i++) expect(spawnSync("node", ["scripts/make-secrets.mjs", file], { encoding: "utf8" }).status).toBe(0);
    const made = JSON.parse(readFileSync(file, "utf8")) as { WEBHOOK_SECRET: string; TOKEN_SECRET: string };
    expect(made.WEBHOOK_SECRET).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(made.TOKEN_SECRET).toMatch(/^[\w-]{43}$/);
    for (const tenant of ["acme", "globex"]) {
      const run = spawnSync("node", ["scripts/mint-key.mjs", tenant, "--into", file], { encoding: "utf8" });
      expect(run.status).toBe(0);
      expect(run.stdout).toMatch(/^key: {3}rk_[\w-]{43}$/m);
    }
    const secrets = JSON.parse(readFileSync(file, "utf8")) as { API_KEYS: string; WEBHOOK_SECRET: string; TOKEN_SECRET: string };
    expect(Object.values(JSON.parse(secrets.API_KEYS)).sort()).toEqual(["acme", "globex"]);
    // Running make-secrets again kept what it made the first time.
    expect(secrets).toMatchObject(made);
    const { out } = check(readFileSync(file, "utf8"), "minted-check.json");
    expect(out).toMatch(/✓ settings/);
  });

  it("rotating the signing secrets: --rotate keeps the old ones as <name>_PREVIOUS beside fresh ones, --end-rotation drops them; each file passes", () => {
    const file = join(dir, "rotated.json");
    writeFileSync(file, JSON.stringify({ API_KEYS: KEYS, WEBHOOK_SECRET, TOKEN_SECRET }));
    const rotate = spawnSync("node", ["scripts/make-secrets.mjs", file, "--rotate"], { encoding: "utf8" });
    expect(rotate.status).toBe(0);
    const rotated = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
    expect(rotated).toMatchObject({ API_KEYS: KEYS, WEBHOOK_SECRET_PREVIOUS: WEBHOOK_SECRET, TOKEN_SECRET_PREVIOUS: TOKEN_SECRET });
    expect(rotated.WEBHOOK_SECRET).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(rotated.TOKEN_SECRET).toMatch(/^[\w-]{43}$/);
    expect(check(readFileSync(file, "utf8"), "rotated-check.json").out).toMatch(/✓ settings/);
    // A second rotation before the first has ended would drop the secret receivers and tokens may still hold.
    const again = spawnSync("node", ["scripts/make-secrets.mjs", file, "--rotate"], { encoding: "utf8" });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/a rotation is under way \(WEBHOOK_SECRET_PREVIOUS, TOKEN_SECRET_PREVIOUS\): end it first with --end-rotation/);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual(rotated);

    const end = spawnSync("node", ["scripts/make-secrets.mjs", file, "--end-rotation"], { encoding: "utf8" });
    expect(end.status).toBe(0);
    expect(end.stdout).toContain("npx wrangler secret delete WEBHOOK_SECRET_PREVIOUS");
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ API_KEYS: KEYS, WEBHOOK_SECRET: rotated.WEBHOOK_SECRET, TOKEN_SECRET: rotated.TOKEN_SECRET });
    expect(check(readFileSync(file, "utf8"), "ended-check.json").out).toMatch(/✓ settings/);
    expect(spawnSync("node", ["scripts/make-secrets.mjs", file, "--rotate", "--end-rotation"], { encoding: "utf8" }).status).toBe(2);
  });
});
