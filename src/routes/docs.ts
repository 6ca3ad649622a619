/**
 * The interactive API reference: Swagger UI (the swagger-ui-dist package's files, bundled with the
 * Worker) reading /openapi.json, with "Try it out" against this deployment. Its files are modules
 * of their own rather than static assets: a Worker with assets has the platform's asset router in
 * front of every request it serves, which cost every API request more than a tenth of its rate.
 */
import { Hono } from "hono";
import favicon from "swagger-ui-dist/favicon-32x32.png";
import bundle from "swagger-ui-dist/swagger-ui-bundle.js";
import stylesheet from "swagger-ui-dist/swagger-ui.css";
import type { AppEnv } from "../auth";

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Edge runs API reference</title>
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="reference"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#reference", deepLinking: true, tryItOutEnabled: true });
  </script>
</body>
</html>`;

/** The files the page loads, bundled with the Worker as modules of their own (wrangler.jsonc, "rules"). */
const FILES: Record<string, { body: string | ArrayBuffer; type: string }> = {
  "swagger-ui.css": { body: stylesheet, type: "text/css; charset=utf-8" },
  "swagger-ui-bundle.js": { body: bundle, type: "text/javascript; charset=utf-8" },
  "favicon-32x32.png": { body: favicon, type: "image/png" },
};

export const docs = new Hono<AppEnv>();

docs.get("/docs", (c) => c.html(PAGE));

docs.get("/docs/:file", (c) => {
  const name = c.req.param("file");
  const file = Object.hasOwn(FILES, name) ? FILES[name] : undefined;
  if (file === undefined) return c.json({ detail: "Not Found" }, 404);
  return c.body(file.body, 200, { "content-type": file.type, "cache-control": "public, max-age=86400" });
});
