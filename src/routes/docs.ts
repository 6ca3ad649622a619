/**
 * The interactive API reference: Swagger UI (served from the swagger-ui-dist package through the
 * DOCS_ASSETS binding) reading /openapi.json, with "Try it out" against this deployment.
 */
import { Hono } from "hono";
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

const FILES = new Set(["swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"]);

export const docs = new Hono<AppEnv>();

docs.get("/docs", (c) => c.html(PAGE));

docs.get("/docs/:file", async (c) => {
  const file = c.req.param("file");
  if (!FILES.has(file)) return c.json({ detail: "Not Found" }, 404);
  const asset = await c.env.DOCS_ASSETS.fetch(new URL(`/${file}`, c.req.url));
  return new Response(asset.body, {
    status: asset.status,
    headers: { "content-type": asset.headers.get("content-type") ?? "application/octet-stream", "cache-control": "public, max-age=86400" },
  });
});
