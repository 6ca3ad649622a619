#!/usr/bin/env node
// Adds fresh signing secrets to a secrets file (made if missing), the file `wrangler secret bulk`
// uploads: WEBHOOK_SECRET (Standard Webhooks, whsec_ + 32 random bytes) and TOKEN_SECRET (32
// random bytes). A secret already in the file is kept, so that running it again changes nothing.
//
//   npm run make-secrets -- [FILE]                  adds what is missing (FILE defaults to .secrets.json)
//   npm run make-secrets -- [FILE] --rotate         each secret becomes <name>_PREVIOUS and a fresh one
//                                                   takes its place: webhooks are signed with both, and
//                                                   tokens signed with the old one stay good (refused
//                                                   while an earlier rotation is under way)
//   npm run make-secrets -- [FILE] --end-rotation   drops the <name>_PREVIOUS secrets from the file
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const FRESH = {
  WEBHOOK_SECRET: () => `whsec_${randomBytes(32).toString("base64")}`,
  TOKEN_SECRET: () => randomBytes(32).toString("base64url"),
};

const args = process.argv.slice(2);
const rotate = args.includes("--rotate");
const endRotation = args.includes("--end-rotation");
const unknown = args.filter((a) => a.startsWith("--") && a !== "--rotate" && a !== "--end-rotation");
if (unknown.length > 0 || (rotate && endRotation)) {
  console.error("usage: make-secrets [FILE] [--rotate | --end-rotation]");
  process.exit(2);
}
const file = args.find((a) => !a.startsWith("--")) ?? ".secrets.json";
const secrets = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
const underWay = Object.keys(FRESH).filter((name) => `${name}_PREVIOUS` in secrets);
if (rotate && underWay.length > 0) {
  // Rotating again would drop the secret receivers and tokens may still hold.
  console.error(`${file}: a rotation is under way (${underWay.map((n) => `${n}_PREVIOUS`).join(", ")}): end it first with --end-rotation`);
  process.exit(1);
}
const said = [];
for (const [name, fresh] of Object.entries(FRESH)) {
  const previous = `${name}_PREVIOUS`;
  if (endRotation) {
    if (!(previous in secrets)) continue;
    delete secrets[previous];
    said.push(`dropped ${previous}; remove it from the deployment with: npx wrangler secret delete ${previous}`);
  } else if (rotate && secrets[name]) {
    secrets[previous] = secrets[name];
    secrets[name] = fresh();
    said.push(`${name} is fresh and the one before it is ${previous}`);
  } else if (!secrets[name]) {
    secrets[name] = fresh();
    said.push(`added ${name}`);
  }
}
writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
console.log(said.length > 0 ? `${file}: ${said.join("; ")}` : endRotation ? `${file}: no rotation is under way` : `${file} already holds both secrets`);
if (rotate) console.log(`upload with: npx wrangler secret bulk ${file}; once no receiver and no token needs the old ones, run this with --end-rotation`);
