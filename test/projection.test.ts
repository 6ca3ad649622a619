import { abortAllDurableObjects, env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Job, Status } from "../src/schemas";
import { TOMBSTONE_TTL_MS } from "../src/tenant/TenantProjection";
import { PROJECTION_MIGRATIONS } from "../src/tenant/projectionSchema";
import { api, drive, finished, post, settle, submit, submitQueued } from "./helpers";

type Stats = { total_jobs: number; by_status: Record<string, number> };
const stats = async () => (await api("/stats")).json<Stats>();
const total = async (query: string) => (await (await api(`/api/v1/runs?${query}`)).json<{ total: number }>()).total;

describe("the tenant projection's tallies", () => {
  it("are filled from the jobs already listed when a projection gains them, and kept from then on", async () => {
    const a = await submit({ steps: 1 }, { session_id: "upgrade" });
    const b = await submit({ steps: 1 }, { session_id: "upgrade" });
    await submitQueued({ steps: 1 });
    await drive(a);
    expect((await post(`/api/v1/runs/${b}/cancel`, {})).status).toBe(200);
    await settle(b);
    const before = await stats();

    // The projection as it was before the tallies: none of the tables, triggers and indexes added
    // since, and its run slots still its own.
    const first = PROJECTION_MIGRATIONS.findIndex((m) => m.includes("CREATE TABLE status_counts"));
    await runInDurableObject(env.PROJECTIONS.getByName("default"), (_instance, state) => {
      for (const trigger of ["jobs_counted_in", "jobs_counted_out", "jobs_recounted"]) state.storage.sql.exec(`DROP TRIGGER ${trigger}`);
      state.storage.sql.exec("DROP TABLE status_counts");
      state.storage.sql.exec("DROP TABLE session_counts");
      state.storage.sql.exec("DROP INDEX jobs_by_seq");
      state.storage.sql.exec("DROP INDEX tombstones_by_age");
      state.storage.sql.exec("DROP INDEX tombstones_by_key");
      state.storage.sql.exec("ALTER TABLE tombstones DROP COLUMN key_digest");
      state.storage.sql.exec("ALTER TABLE tombstones DROP COLUMN discarded");
      state.storage.sql.exec("DROP TABLE IF EXISTS slots_to_hand_over");
      state.storage.sql.exec("DROP TABLE usage_days");
      for (const trigger of ["jobs_labelled", "jobs_unlabelled", "jobs_relabelled"]) state.storage.sql.exec(`DROP TRIGGER ${trigger}`);
      for (const table of ["labels", "label_counts", "label_session_counts", "changes", "token_submits", "token_keys", "token_spends"]) state.storage.sql.exec(`DROP TABLE ${table}`);
      state.storage.sql.exec("ALTER TABLE jobs DROP COLUMN fed_at");
      state.storage.sql.exec("CREATE TABLE slots (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, running INTEGER NOT NULL DEFAULT 0)");
      state.storage.sql.exec("DELETE FROM _migrations WHERE id > ?", first);
    });
    await abortAllDurableObjects();

    // Usage was counted from the tallies' version on; the jobs and their statuses carry over.
    const { total_jobs, by_status } = await stats();
    expect({ total_jobs, by_status }).toEqual({ total_jobs: before.total_jobs, by_status: before.by_status });
    expect(before.total_jobs).toBe(3);
    expect(await total("session_id=upgrade")).toBe(2);
    expect(await total("session_id=upgrade&status=cancelled")).toBe(1);
    expect(await total("session_id=upgrade&status=succeeded")).toBe(1);
    expect(await total("status=queued")).toBe(1);

    const c = await submit({ steps: 1 }, { session_id: "upgrade" });
    expect(await total("session_id=upgrade&status=running")).toBe(1);
    await drive(c);
    expect(await total("session_id=upgrade&status=running")).toBe(0);
    expect(await total("session_id=upgrade&status=succeeded")).toBe(2);
    expect((await api(`/api/v1/runs/${c}`, { method: "DELETE" })).status).toBe(204);
    expect(await total("session_id=upgrade")).toBe(2);
    expect((await stats()).total_jobs).toBe(3);
  });

  it("count a job whose session is the empty string under that session only", async () => {
    // `?session_id=` lists every session (an empty query value is not given), so the projection is asked directly.
    const inSession = async (status?: Status) =>
      (await env.PROJECTIONS.getByName("default").list({ session_id: "", status, page: 1, page_size: 1 })).total;
    const id = await submit({ steps: 1 }, { session_id: "" });
    expect(await inSession()).toBe(1);
    await drive(id);
    expect(await inSession("succeeded")).toBe(1);
    expect(await inSession("running")).toBe(0);
  });
});

describe("tombstones of deleted jobs", () => {
  const tombstones = () =>
    runInDurableObject(env.PROJECTIONS.getByName("default"), (_instance, state) =>
      state.storage.sql.exec<{ job_id: string; deleted_at: number }>("SELECT job_id, deleted_at FROM tombstones").toArray(),
    );

  it("keep a deleted job from coming back, and are pruned a day later by the deletes that follow", async () => {
    const old = await finished({ steps: 1 });
    const snapshot = await (await api(`/api/v1/runs/${old}`)).json<Job>();
    expect((await api(`/api/v1/runs/${old}`, { method: "DELETE" })).status).toBe(204);
    expect((await tombstones()).map((t) => t.job_id)).toContain(old);

    // A late snapshot of the deleted job is ignored.
    await env.PROJECTIONS.getByName("default").upsert(snapshot, 1_000);
    const listed = await (await api("/api/v1/runs?page_size=100")).json<{ jobs: { job_id: string }[] }>();
    expect(listed.jobs.map((j) => j.job_id)).not.toContain(old);

    // A day and more later, the next delete takes the old tombstone with it; its own stays.
    await runInDurableObject(env.PROJECTIONS.getByName("default"), (_instance, state) => {
      state.storage.sql.exec("UPDATE tombstones SET deleted_at = ? WHERE job_id = ?", Date.now() - TOMBSTONE_TTL_MS - 1, old);
    });
    const next = await finished({ steps: 1 });
    expect((await api(`/api/v1/runs/${next}`, { method: "DELETE" })).status).toBe(204);
    const left = (await tombstones()).map((t) => t.job_id);
    expect(left).not.toContain(old);
    expect(left).toContain(next);
  });
});

describe("the usage of a deleted job", () => {
  it("is counted from the final usage its deletion carries when no snapshot carrying it arrived, and only once", async () => {
    const projection = env.PROJECTIONS.getByName("usage-at-removal");
    const id = await finished({ steps: 1 });
    const snapshot = await (await api(`/api/v1/runs/${id}`)).json<Job>();
    await projection.upsert({ ...snapshot, usage: { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30, model_calls: 1, estimated: false } }, 1);
    expect((await projection.stats()).usage).toEqual({ prompt_tokens: 10, completion_tokens: 20, total_tokens: 30, model_calls: 1 });

    const final = { prompt_tokens: 25, completion_tokens: 50, model_calls: 3 };
    await projection.remove(id, final);
    expect((await projection.stats()).usage).toEqual({ prompt_tokens: 25, completion_tokens: 50, total_tokens: 75, model_calls: 3 });
    // A removal sent again (its outbox row retried) finds nothing left to count.
    await projection.remove(id, final);
    expect((await projection.stats()).usage).toEqual({ prompt_tokens: 25, completion_tokens: 50, total_tokens: 75, model_calls: 3 });
  });
});
