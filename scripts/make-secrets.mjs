#!/usr/bin/env node
// Adds fresh signing secrets to a secrets file (made if missing), the file `wrangler secret bulk`
// uploads: WEBHOOK_SECRET (Standard Webhooks, whsec_ + 32 random bytes) and TOKEN_SECRET (32
// random bytes). A secret already in the file is kept, so that running it again changes nothing.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const file = process.argv[2] ?? ".secrets.json";
const secrets = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
const made = [];
if (!secrets.WEBHOOK_SECRET) {
  secrets.WEBHOOK_SECRET = `whsec_${randomBytes(32).toString("base64")}`;
  made.push("WEBHOOK_SECRET");
}
if (!secrets.TOKEN_SECRET) {
  secrets.TOKEN_SECRET = randomBytes(32).toString("base64url");
  made.push("TOKEN_SECRET");
}
writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
console.log(made.length > 0 ? `added ${made.join(" and ")} to ${file}` : `${file} already holds both secrets`);
