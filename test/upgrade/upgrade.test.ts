/// <reference types="vite/client" />
/**
 * Upgrades from every earlier schema version of this repository. Each fixture is the state an
 * earlier version's own code left under `wrangler dev` when it was killed mid-run (see
 * make-fixture.ts): its databases, as its migrations made them and its code filled them, and
 * its R2 objects. The state is loaded into today's objects (a `TenantIndex` into the
 * `TenantProjection` of the same tenant, as the `renamed_classes` migration carries it), the
 * objects are restarted, and today's code must migrate them to exactly the schema it creates
 * itself, answer for every job, finish the jobs that were running or waiting, replay the
 * idempotency key, serve the outputs byte for byte, and delete everything, leaving nothing.
 */
import { abortAllDurableObjects, env, listDurableObjectIds, reset, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { api, drive, getJob, lineStub, post, runStub, submit } from "../helpers";
import { RUN_MIGRATIONS } from "../../src/run/store";

interface Database {
  tables: string[];
  indexes_and_triggers: string[];
  rows: Record<string, Record<string, unknown>[]>;
}
interface Fixture {
  commit: string;
  subject: string;
  jobs: Record<string, string>;
  statuses_when_killed: Record<string, string>;
  killed_at: number;
  objects: Record<string, Database[]>;
  r2: Record<string, string>;
}

const fixtures = Object.values(import.meta.glob<Fixture>("./fixtures/*.json", { eager: true, import: "default" }));

const NAME_TABLE = "__miniflare_do_name";
const TERMINAL = ["succeeded", "failed", "cancelled"];

function namespaceOf(cls: string) {
  if (cls === "RunObject") return env.RUNS;
  if (cls === "TenantLine") return env.LINES;
  if (cls === "TenantIndex" || cls === "TenantProjection") return env.PROJECTIONS;
  throw new Error(`no namespace for ${cls}`);
}

const tableName = (ddl: string) => /^CREATE TABLE "?(\w+)"?/.exec(ddl)![1];
const bytes = (base64: string) => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));

/**
 * A stored value as if the old version had been killed a moment ago: every time in milliseconds
 * (the only integers this large) moves forward by the fixture's age, so that no deadline,
 * retention or delay has passed since; those inside JSON text too (an open input request keeps
 * its expiry there).
 */
function sqlValue(v: unknown, age: number): unknown {
  if (v !== null && typeof v === "object" && "$blob" in v) return bytes((v as { $blob: string }).$blob).buffer;
  if (typeof v === "string" && /^[[{]/.test(v)) {
    const parsed = parseJson(v);
    if (parsed === undefined) return v;
    const shifted = JSON.stringify(shiftTimes(parsed, age));
    return shifted === JSON.stringify(parsed) ? v : shifted;
  }
  return shiftTimes(v, age);
}
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
const isTime = (v: unknown): v is number => typeof v === "number" && v > 1.5e12 && v < 2.5e12;
function shiftTimes(v: unknown, age: number): unknown {
  if (isTime(v)) return v + age;
  if (Array.isArray(v)) return v.map((x) => shiftTimes(x, age));
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shiftTimes(x, age)]));
  return v;
}

/** The object's database replaced by the fixture's: its tables, their rows, then its indexes and triggers. */
function restore(storage: DurableObjectStorage, db: Database, age: number): void {
  for (const ddl of db.tables) {
    const table = tableName(ddl);
    if (table === NAME_TABLE) continue;
    storage.sql.exec(ddl);
    for (const row of db.rows[table]) {
      const columns = Object.keys(row);
      storage.sql.exec(`INSERT INTO "${table}" (${columns.map((c) => `"${c}"`).join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`, ...columns.map((c) => sqlValue(row[c], age)));
    }
  }
  for (const ddl of db.indexes_and_triggers) storage.sql.exec(ddl);
}

/**
 * What an object's database holds: every table, index and trigger, as SQL. Not `sqlite_sequence`,
 * SQLite's own table of AUTOINCREMENT counters: once made it cannot be dropped, so a job's object
 * from before its events were numbered without one keeps it, empty.
 */
async function schemaOf(stub: DurableObjectStub<Rpc.DurableObjectBranded>): Promise<string[]> {
  return runInDurableObject(stub, (_instance, state) =>
    state.storage.sql
      .exec<{ sql: string }>(
        `SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name NOT IN ('${NAME_TABLE}', 'sqlite_sequence')`,
      )
      .toArray()
      .map((r) => r.sql)
      .sort(),
  );
}

async function load(fixture: Fixture): Promise<{ cls: string; name: string }[]> {
  const loaded: { cls: string; name: string }[] = [];
  const age = Date.now() - fixture.killed_at;
  for (const [cls, dbs] of Object.entries(fixture.objects)) {
    for (const db of dbs) {
      const name = String(db.rows[NAME_TABLE][0].name);
      await runInDurableObject(namespaceOf(cls).getByName(name), async (_instance, state) => {
        await state.storage.deleteAll();
        restore(state.storage, db, age);
      });
      loaded.push({ cls, name });
    }
  }
  for (const [key, content] of Object.entries(fixture.r2)) await env.OUTPUTS.put(key, bytes(content));
  // The objects start again on today's code, as after a deploy.
  await abortAllDurableObjects();
  return loaded;
}

describe.each(fixtures.map((f) => [`${f.commit} (${f.subject.slice(0, 60)}…)`, f] as const))("upgrade from %s", (_name, fixture) => {
  beforeEach(async () => {
    await reset();
  });

  it("migrates every object to today's schema, serves and finishes every job, and deletes everything", { timeout: 60_000 }, async () => {
    const loaded = await load(fixture);
    const { jobs, statuses_when_killed: killed } = fixture;

    // Every job answers, with the status it had.
    for (const [role, id] of Object.entries(jobs)) {
      const job = await getJob(id);
      expect(job.job_id, role).toBe(id);
      if (TERMINAL.includes(killed[role])) expect(job.status, role).toBe(killed[role]);
      if (killed[role] === "awaiting_input") {
        // The request survived the upgrade; answered now, the job goes on.
        expect(job.status, role).toBe("awaiting_input");
        expect(job.input_request, role).toMatchObject({ step: "step_1", output: "Step 1/2 (step_1): simulated answer to: upgrade: awaiting input\n" });
        // Under an idempotency key, sent twice: the migrated object keeps the key with the step it answered.
        const answer = () => post(`/api/v1/runs/${id}/input`, { action: "approve" }, { "Idempotency-Key": `upgrade-${role}` });
        expect((await answer()).status, role).toBe(200);
        const again = await answer();
        expect(again.status, role).toBe(200);
        expect(again.headers.get("Idempotent-Replayed"), role).toBe("true");
      }
    }

    // The old projection's alarm hands over what it kept for the line (as on a deployment, where it fires by itself).
    await runDurableObjectAlarm(env.PROJECTIONS.getByName("default"));
    // A job answered after the upgrade waits for a slot like any other: it is driven last.
    const inOrder = Object.entries(jobs).sort(([a], [b]) => Number(killed[a] === "awaiting_input") - Number(killed[b] === "awaiting_input"));
    for (const [role, id] of inOrder) {
      const ended = await drive(id);
      expect(ended.status, `${role}: ${ended.error}`).toBe(TERMINAL.includes(killed[role]) ? killed[role] : "succeeded");
    }

    // Today's code migrated each old object to the very schema it makes itself.
    await drive(await submit({ steps: 1 }));
    const fresh = {
      RunObject: await schemaOf(env.RUNS.getByName(`default/${(await (await api("/api/v1/runs?page_size=1")).json<{ jobs: { job_id: string }[] }>()).jobs[0].job_id}`)),
      TenantProjection: await schemaOf(env.PROJECTIONS.getByName("default")),
      TenantLine: await schemaOf(lineStub()),
    };
    for (const { cls, name } of loaded) {
      const today = cls === "TenantIndex" ? "TenantProjection" : cls;
      expect(await schemaOf(namespaceOf(cls).getByName(name)), `${cls} ${name}`).toEqual(fresh[today as keyof typeof fresh]);
    }

    // The list, the stats and the idempotency key carried over.
    const list = await (await api("/api/v1/runs?page_size=100")).json<{ total: number; jobs: { job_id: string }[] }>();
    expect(list.total).toBe(Object.keys(jobs).length + 1);
    expect(list.jobs.map((j) => j.job_id)).toEqual(expect.arrayContaining(Object.values(jobs)));
    const replay = await post("/api/v1/runs", {
      prompt: "upgrade: keyed",
      config: { simulate: { steps: 1, step_ms: 10 } },
      idempotency_key: "upgrade-key",
      session_id: "upgrade-session",
      metadata: { origin: "fixture" },
    });
    expect(replay.status).toBe(202);
    expect((await replay.json<{ job_id: string }>()).job_id).toBe(jobs.keyed);
    // Jobs listed before labels existed are found by their metadata.
    const labelled = await (await api("/api/v1/runs?metadata.origin=fixture")).json<{ total: number; jobs: { job_id: string }[] }>();
    expect(labelled.jobs.map((j) => j.job_id)).toEqual([jobs.keyed]);
    expect(labelled.total).toBe(1);

    // Outputs stored by the old code are served byte for byte.
    const prefix = `runs/default/${jobs.finished}/`;
    const parts = Object.keys(fixture.r2).filter((k) => k.startsWith(prefix)).sort();
    expect(parts.length).toBeGreaterThan(0);
    const expected = parts.map((k) => atob(fixture.r2[k])).join("");
    expect(await (await api(`/api/v1/runs/${jobs.finished}/output`)).text()).toBe(expected);

    // And everything goes when deleted.
    const all = await (await api("/api/v1/runs?page_size=100")).json<{ jobs: { job_id: string }[] }>();
    for (const { job_id } of all.jobs) expect((await api(`/api/v1/runs/${job_id}`, { method: "DELETE" })).status, job_id).toBe(204);
    expect((await env.OUTPUTS.list({ prefix: "runs/" })).objects).toEqual([]);
    const stats = await (await api("/stats")).json<{ total_jobs: number }>();
    expect(stats.total_jobs).toBe(0);
    // No session's or label's tally is left, not even the zeros the old code kept.
    const tallies = await runInDurableObject(env.PROJECTIONS.getByName("default"), (_i, state) =>
      ["session_counts", "label_counts", "label_session_counts"].map((table) => state.storage.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`).one().n),
    );
    expect(tallies).toEqual([0, 0, 0]);
    for (const id of await listDurableObjectIds(env.RUNS)) {
      const tables = await runInDurableObject(env.RUNS.get(id), (_i, state) =>
        state.storage.sql.exec<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' AND name != '${NAME_TABLE}'`).toArray(),
      );
      const left = tables.length === 0 ? "" : await runInDurableObject(env.RUNS.get(id), (_i, state) => JSON.stringify([state.storage.sql.exec("SELECT * FROM outbox").toArray(), state.storage.sql.exec("SELECT body FROM spec").toArray(), state.storage.sql.exec("SELECT * FROM run").toArray()]));
      expect(tables, `${id}: ${left}`).toEqual([]);
    }
  });
});

describe("a new job's object", () => {
  it("records every migration step as applied, so that it starts again without migrating", async () => {
    const id = await submit({ steps: 2, step_ms: 0 });
    const applied = await runInDurableObject(runStub(id), (_i, state) =>
      state.storage.sql.exec<{ id: number }>("SELECT id FROM _migrations ORDER BY id").toArray().map((r) => r.id),
    );
    expect(applied).toEqual(RUN_MIGRATIONS.map((_, i) => i + 1));
    // Started again, it finds nothing to migrate (a step run twice would fail on its table) and serves the job.
    await abortAllDurableObjects();
    expect((await drive(id)).status).toBe("succeeded");
  });
});
