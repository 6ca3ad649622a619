/**
 * The reference frontend at `/`: one page, its script's modules and its styles, from frontend/ as they are.
 * They are bundled beside the Worker's code as text modules (the `rules` of wrangler.jsonc), as
 * Swagger UI's files are: an isolate is handed them as strings, and parses none of them as code.
 * It calls the API from the browser like any other client.
 */
import { Hono } from "hono";
import app from "../../frontend/app.js";
import events from "../../frontend/events.js";
import grant from "../../frontend/grant.js";
import known from "../../frontend/known.js";
import output from "../../frontend/output.js";
import page from "../../frontend/page.js";
import requests from "../../frontend/requests.js";
import run from "../../frontend/run.js";
import runs from "../../frontend/runs.js";
import start from "../../frontend/start.js";
import styles from "../../frontend/app.css";
import html from "../../frontend/index.html";
import type { AppEnv } from "../auth";

const SCRIPT = "text/javascript; charset=utf-8";

/** Each file at its path: the page at `/`, its modules (app.js imports the rest) and its styles beside it. */
const FRONTEND_FILES: [path: string, body: string, type: string][] = [
  ["/", html, "text/html; charset=utf-8"],
  ["/app.css", styles, "text/css; charset=utf-8"],
  ...Object.entries({ app, events, grant, known, output, page, requests, run, runs, start }).map(([name, body]): [string, string, string] => [`/${name}.js`, body, SCRIPT]),
];

/** The page talks to its own origin only, runs only its own script, and sends no referrer (a token may be in its address). */
const HEADERS = {
  "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

export const frontend = new Hono<AppEnv>();

for (const [path, body, type] of FRONTEND_FILES) {
  frontend.get(path, (c) => c.body(body, 200, { ...HEADERS, "Content-Type": type }));
}
