#!/usr/bin/env node
// Mints an API key for a tenant. Prints the key (give it to the client; it is not stored) and
// the API_KEYS entry to configure (only the key's SHA-256 is kept by the service). With
// `--into FILE` the entry is added to the API_KEYS of that secrets file (made if missing), the
// file `wrangler secret bulk` uploads.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const [tenant, flag, file] = process.argv.slice(2);
if (!tenant || !/^[A-Za-z0-9_-]{1,64}$/.test(tenant) || (flag !== undefined && (flag !== "--into" || !file))) {
  console.error("usage: npm run mint-key -- <tenant> [--into .secrets.json]   (tenant: 1-64 of [A-Za-z0-9_-])");
  process.exit(2);
}
const key = `rk_${randomBytes(32).toString("base64url")}`;
const hash = createHash("sha256").update(key).digest("hex");
console.log(`key:   ${key}`);
if (file) {
  const secrets = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
  const keys = secrets.API_KEYS ? JSON.parse(secrets.API_KEYS) : {};
  keys[hash] = tenant;
  secrets.API_KEYS = JSON.stringify(keys);
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
  console.log(`added to API_KEYS in ${file}; upload with: npx wrangler secret bulk ${file}`);
} else {
  console.log(`entry: "${hash}": "${tenant}"`);
  console.log(`add the entry to the JSON object of the API_KEYS secret, e.g.:`);
  console.log(`  echo '{"${hash}": "${tenant}"}' | npx wrangler secret put API_KEYS`);
}
