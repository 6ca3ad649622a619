/** Helpers for the tenant's line, tested under small limits (see vitest.config.ts, "workers-line"). */
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import type { Job } from "../../src/schemas";
import { api, getJob, lineStub, post, settle } from "../helpers";

export const LIMIT = 3;
export const KEY_LIMIT = 1;
export const QUEUED_LIMIT = 8;

/** Submits a simulated job with queue controls; returns its id and the status it was accepted with. */
export async function enqueue(fields: Record<string, unknown> = {}, simulate: Record<string, unknown> = {}) {
  const res = await post("/api/v1/runs", { prompt: "line", config: { simulate: { step_ms: 1, ...simulate } }, ...fields });
  if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${await res.text()}`);
  return res.json<{ job_id: string; status: string }>();
}

export async function statuses(ids: string[]): Promise<string[]> {
  return Promise.all(ids.map(async (id) => (await getJob(id)).status));
}

/** Fires the line's alarm: delayed jobs become due, expired ones fail, free slots are granted. */
export async function fireLine(): Promise<boolean> {
  return runDurableObjectAlarm(lineStub());
}

/** Cancels a job and lets it tell the line that its slot is free, then lets the line act. */
export async function release(id: string): Promise<void> {
  const res = await api(`/api/v1/runs/${id}/cancel`, { method: "POST" });
  if (res.status !== 200) throw new Error(`cancel answered ${res.status}: ${await res.text()}`);
  await settle(id);
  await fireLine();
}

/** How long after a slot is granted as its job joins that the job is asked whether it was made (TenantLine). */
export const ASKED_AFTER_MS = 60_000;

/**
 * Lets the time pass after which slots granted as their jobs joined are asked about, then fires
 * the line's alarm, which asks.
 */
export async function askSlotsGrantedAtJoin(): Promise<void> {
  await runInDurableObject(lineStub(), (_i, state) => {
    state.storage.sql.exec(
      "UPDATE places SET joined_at = joined_at - ?, granted_at = granted_at - ?, retry_at = retry_at - ? WHERE state = 'running' AND told = 0",
      ASKED_AFTER_MS,
      ASKED_AFTER_MS,
      ASKED_AFTER_MS,
    );
  });
  await fireLine();
}

export async function lineCounts() {
  return lineStub().counts();
}

export const alarmOf = (stub: DurableObjectStub<Rpc.DurableObjectBranded>) => runInDurableObject(stub, (_i, state) => state.storage.getAlarm());

export type { Job };
