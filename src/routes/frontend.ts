/**
 * The reference frontend at `/`: one page, its script and its styles, from frontend/ as they are.
 * They are bundled beside the Worker's code as text modules (the `rules` of wrangler.jsonc), as
 * Swagger UI's files are: an isolate is handed them as strings, and parses none of them as code.
 * It calls the API from the browser like any other client.
 */
import { Hono } from "hono";
import script from "../../frontend/app.js";
import styles from "../../frontend/app.css";
import page from "../../frontend/index.html";
import type { AppEnv } from "../auth";

const FRONTEND_FILES = { "index.html": page, "app.js": script, "app.css": styles } as const;

const TYPES: Record<string, string> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "app.css": "text/css; charset=utf-8",
};

/** The page talks to its own origin only, runs only its own script, and sends no referrer (a token may be in its address). */
const HEADERS = {
  "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

export const frontend = new Hono<AppEnv>();

for (const [path, file] of [["/", "index.html"], ["/app.js", "app.js"], ["/app.css", "app.css"]] as const) {
  frontend.get(path, (c) => c.body(FRONTEND_FILES[file], 200, { ...HEADERS, "Content-Type": TYPES[file] }));
}
