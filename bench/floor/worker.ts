/**
 * The floor, for the benchmark: the least a submit and a status read must do when
 * every job has its own SQLite Durable Object. Submit creates a fresh object and writes one row
 * and an alarm in it; status reads that row back; delete removes the alarm and everything stored.
 * `POST /api/v1/runs?tenant_calls=2` is the floor of this design: the same submit with a small
 * write on each of two objects that already exist, as a submit here takes a place in its
 * tenant's line and an entry in its tenant's list. `POST /one-object?calls=N` makes N small
 * writes on one object, for the rate a single object (a tenant's line or projection) serves.
 * Every request writes the one JSON log line the operations contract asks of each (and answers
 * with its request id), as the service does: under `wrangler dev` a log line costs about as much
 * as the rest of a status read. Served by `wrangler dev` beside the service.
 */
import { DurableObject } from "cloudflare:workers";

interface FloorEnv {
  JOBS: DurableObjectNamespace<FloorJob>;
}

export class FloorJob extends DurableObject<FloorEnv> {
  create(id: string): void {
    this.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS job (id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at INTEGER NOT NULL)");
    this.ctx.storage.sql.exec("INSERT INTO job (id, status, created_at) VALUES (?, 'queued', ?)", id, Date.now());
    void this.ctx.storage.setAlarm(Date.now() + 86_400_000);
  }

  get(): Record<string, unknown> | null {
    return this.ctx.storage.sql.exec("SELECT id, status, created_at FROM job").toArray()[0] ?? null;
  }

  /** One small write on an object that already exists: what one object serves a second. */
  touch(): void {
    this.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS touches (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL)");
    this.ctx.storage.sql.exec("INSERT INTO touches (at) VALUES (?)", Date.now());
  }

  /**
   * A place in a tenant-wide object that already exists (the line, the projection): refused past
   * `limit` rows, as a line refuses past its queued limit, else one row written.
   */
  enter(id: string, limit: number): boolean {
    const sql = this.ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS entries (id TEXT PRIMARY KEY, at INTEGER NOT NULL)");
    sql.exec("CREATE TABLE IF NOT EXISTS tally (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)");
    if ((sql.exec<{ n: number }>("SELECT n FROM tally").toArray()[0]?.n ?? 0) >= limit) return false;
    sql.exec("INSERT INTO entries (id, at) VALUES (?, ?)", id, Date.now());
    sql.exec("INSERT INTO tally (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1");
    return true;
  }

  /** Everything the object stored, gone: what a delete must do at the least. */
  async remove(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
  }

  alarm(): void {}
}

/** The floor's queued limit: checked on every submit, as the service's is, and never reached. */
const TENANT_LIMIT = 1_000_000_000;

/** The route a request matched, as the service's log line names it. */
function routeOf(url: URL): string {
  if (/^\/api\/v1\/runs\/run_[A-Za-z0-9]+$/.test(url.pathname)) return "/api/v1/runs/:id";
  return ["/health", "/api/v1/runs", "/one-object"].includes(url.pathname) ? url.pathname : "unmatched";
}

export default {
  async fetch(request: Request, env: FloorEnv): Promise<Response> {
    const started = Date.now();
    const url = new URL(request.url);
    const requestId = crypto.randomUUID();
    const response = await handle(request, url, env);
    response.headers.set("X-Request-Id", requestId);
    const line = { request_id: requestId, tenant: "default", method: request.method, route: routeOf(url), status: response.status, duration_ms: Date.now() - started, job_id: null };
    console.log(JSON.stringify({ event: "request", ...line }));
    return response;
  },
};

async function handle(request: Request, url: URL, env: FloorEnv): Promise<Response> {
  if (url.pathname === "/health") return Response.json({ status: "healthy" });
  if (request.method === "POST" && url.pathname === "/api/v1/runs") {
    await request.arrayBuffer();
    const id = `run_${crypto.randomUUID().replaceAll("-", "")}`;
    // `?tenant_calls=2`: the two calls on the tenant's own objects this design must make around
    // the job's creation (a place in its line, then an entry in its list), each a small write.
    const tenantCalls = url.searchParams.get("tenant_calls") === "2";
    if (tenantCalls && !(await env.JOBS.getByName("tenant-line").enter(id, TENANT_LIMIT))) return Response.json({ detail: "Too many queued jobs" }, { status: 429 });
    await env.JOBS.getByName(id).create(id);
    if (tenantCalls) await env.JOBS.getByName("tenant-projection").enter(id, TENANT_LIMIT);
    return Response.json({ job_id: id, status: "queued" }, { status: 202 });
  }
  if (request.method === "POST" && url.pathname === "/one-object") {
    // Many calls per request, so that the object, not the HTTP front, is what is measured.
    const calls = Math.min(1000, Math.max(1, Number(url.searchParams.get("calls")) || 1));
    const object = env.JOBS.getByName("one");
    await Promise.all(Array.from({ length: calls }, () => object.touch()));
    return new Response(null, { status: 204 });
  }
  const match = /^\/api\/v1\/runs\/(run_[A-Za-z0-9]+)$/.exec(url.pathname);
  if (request.method === "GET" && match) {
    const job = await env.JOBS.getByName(match[1]).get();
    return job ? Response.json(job) : Response.json({ detail: `Job not found: ${match[1]}` }, { status: 404 });
  }
  if (request.method === "DELETE" && match) {
    await env.JOBS.getByName(match[1]).remove();
    return new Response(null, { status: 204 });
  }
  return Response.json({ detail: "Not Found" }, { status: 404 });
}
