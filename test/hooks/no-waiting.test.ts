/**
 * No request waits on anyone else: cancel and delete answer while a webhook receiver holds its
 * request open and hundreds of jobs wait in line. What they owe goes out from the job's alarm.
 */
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, getJob, lineStub, post, r2Keys, runStub, settle, storedTables, waitFor } from "../helpers";
import { RECEIVER_URL, type Delivery } from "./protocol";

const deliveriesTo = async (token: string) => ((await (await fetch(`${RECEIVER_URL}/_deliveries`)).json()) as Delivery[]).filter((d) => d.token === token);

async function submit(fields: Record<string, unknown> = {}): Promise<string> {
  const res = await post("/api/v1/runs", { prompt: "waiting", config: { simulate: { steps: 3, step_ms: 1 } }, ...fields });
  expect(res.status).toBe(202);
  return (await res.json<{ job_id: string }>()).job_id;
}

describe("requests that wait on no one", () => {
  it("cancel and delete answer while the webhook receiver never answers and hundreds wait in line", { timeout: 60_000 }, async () => {
    const token = `stall-${Date.now()}`;
    const hooked = await submit({ webhook_url: `${RECEIVER_URL}/hooks/stall/${token}` });
    const others = [];
    for (let i = 0; i < 9; i++) others.push(await submit()); // every slot of the tenant is taken
    const waiting: string[] = [];
    for (let batch = 0; batch < 15; batch++) waiting.push(...(await Promise.all(Array.from({ length: 20 }, () => submit()))));
    expect((await lineStub().counts()).waiting).toBe(300);

    // A cancel of a running job answers with its state change alone: no webhook, no wake-up yet.
    expect((await api(`/api/v1/runs/${hooked}/cancel`, { method: "POST" })).status).toBe(200);
    expect(await deliveriesTo(token)).toEqual([]);
    expect((await lineStub().counts()).waiting).toBe(300);

    // The job's alarm tells the line and sends the webhook, which the receiver holds open...
    const alarm = runDurableObjectAlarm(runStub(hooked));
    await waitFor(async () => (await deliveriesTo(token)).length === 1, "the webhook to reach the receiver");
    expect((await deliveriesTo(token))[0].answered).toBe(0);

    // ...while a delete of the same job answers, and so does a cancel of another.
    expect((await api(`/api/v1/runs/${hooked}`, { method: "DELETE" })).status).toBe(204);
    expect((await api(`/api/v1/runs/${hooked}`)).status).toBe(404);
    expect((await api(`/api/v1/runs/${others[0]}/cancel`, { method: "POST" })).status).toBe(200);
    expect((await deliveriesTo(token))[0].answered).toBe(0); // still held: nobody waited for it

    // The freed slot goes to the first in line when the line's alarm runs, not in any request.
    await settle(others[0]);
    const first = (await lineStub().positions(waiting)) as Record<string, number | null>;
    const next = waiting.find((id) => first[id] === 1)!;
    expect((await getJob(next)).status).toBe("queued");
    await runDurableObjectAlarm(lineStub());
    expect((await getJob(next)).status).toBe("running");

    await alarm; // the send gives up after its own timeout
    expect(await r2Keys(`runs/default/${hooked}/`)).toEqual([]);
  });

  it("a forced delete still delivers the job's cancelled webhook, then leaves nothing behind", async () => {
    const token = `forced-${Date.now()}`;
    const id = await submit({ webhook_url: `${RECEIVER_URL}/hooks/ok/${token}`, session_id: token });
    await runDurableObjectAlarm(runStub(id)); // step 1 writes output
    expect((await api(`/api/v1/runs/${id}?force=true`, { method: "DELETE" })).status).toBe(204);

    // Purged at once: 404, no output, not listed; only the owed delivery is kept.
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(await r2Keys(`runs/default/${id}/`)).toEqual([]);
    expect((await api(`/api/v1/runs?session_id=${token}`).then((r) => r.json<{ total: number }>())).total).toBe(0);
    expect(await storedTables(id)).not.toEqual([]);

    await runDurableObjectAlarm(runStub(id));
    const [delivery, ...more] = await deliveriesTo(token);
    expect(more).toEqual([]);
    expect(delivery).toMatchObject({ verified: true, answered: 200 });
    expect(delivery.body).toMatchObject({ job_id: id, status: "cancelled", result: null });
    expect(await storedTables(id)).toEqual([]);
    expect((await api(`/api/v1/runs/${id}`)).status).toBe(404);
    expect(env.OUTPUTS).toBeDefined();
  });
});
