#!/usr/bin/env node
// Mints an API key for a tenant. Prints the key (give it to the client; it is not stored) and
// the API_KEYS entry to configure (only the key's SHA-256 is kept by the service).
import { createHash, randomBytes } from "node:crypto";

const tenant = process.argv[2];
if (!tenant || !/^[A-Za-z0-9_-]{1,64}$/.test(tenant)) {
  console.error("usage: npm run mint-key -- <tenant>   (tenant: 1-64 of [A-Za-z0-9_-])");
  process.exit(2);
}
const key = `rk_${randomBytes(32).toString("base64url")}`;
const hash = createHash("sha256").update(key).digest("hex");
console.log(`key:   ${key}`);
console.log(`entry: "${hash}": "${tenant}"`);
console.log(`add the entry to the JSON object of the API_KEYS secret, e.g.:`);
console.log(`  echo '{"${hash}": "${tenant}"}' | npx wrangler secret put API_KEYS`);
