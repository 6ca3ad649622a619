/** The TypeScript client and the `runs` CLI against a real `wrangler dev`. */
import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunsApiError, RunsClient, type RunEvent } from "../../client/index";
import { BASE, startServer, stopServer, type DevServer } from "./server";

let server: DevServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  if (server) await stopServer(server);
});

const client = new RunsClient({ baseUrl: BASE });
const simulate = (steps: number, step_ms: number, extra: Record<string, number> = {}) => ({ simulate: { steps, step_ms, ...extra } });

describe("the TypeScript client", () => {
  it("submits, waits honouring retry_after, and reads the result and output", async () => {
    const submitted = await client.submit({ prompt: "client", config: simulate(2, 300) }, { idempotencyKey: `c-${Date.now()}` });
    expect(submitted).toMatchObject({ status: "running", replayed: false }); // a slot was free at submit
    const polls: string[] = [];
    const job = await client.waitForCompletion(submitted.job_id, { onUpdate: (j) => polls.push(j.status) });
    expect(job.status).toBe("succeeded");
    expect(polls.length).toBeLessThanOrEqual(3); // one poll per retry_after (2 s), not a busy loop

    const result = await client.result(job.job_id);
    expect(result.result).toBe("Step 1/2 (step_1): simulated answer to: client\nStep 2/2 (step_2): simulated answer to: client\n");
    const part = await client.output(job.job_id, { start: 5, end: 8 });
    expect(part.status).toBe(206);
    expect(await part.text()).toBe(result.result!.slice(5, 9));
  });

  it("replays an idempotent submission", async () => {
    const key = `idem-${Date.now()}`;
    const first = await client.submit({ prompt: "once" }, { idempotencyKey: key });
    const again = await client.submit({ prompt: "once" }, { idempotencyKey: key });
    expect(again).toMatchObject({ job_id: first.job_id, replayed: true });
    await client.delete(first.job_id, { force: true });
  });

  it("pages through every job of a list", async () => {
    const session = `client-list-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await client.submit({ prompt: `p${i}`, session_id: session, config: simulate(1, 1) })).job_id);
    const seen: string[] = [];
    for await (const job of client.listAll({ session_id: session, page_size: 2 })) seen.push(job.job_id);
    expect(seen).toEqual([...ids].reverse());
  });

  it("raises typed errors carrying status and detail", async () => {
    const missing = await client.get("run_missing").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(RunsApiError);
    expect(missing).toMatchObject({ status: 404, detail: "Job not found: run_missing" });

    const { job_id } = await client.submit({ prompt: "busy", config: simulate(3, 2000) });
    const refused = await client.delete(job_id).catch((e: unknown) => e);
    expect(refused).toMatchObject({ status: 400, detail: "Cannot delete running job. Cancel it first." });
    expect((await client.cancel(job_id)).status).toBe("cancelled");
    await client.delete(job_id);
    expect(await client.get(job_id).catch((e: RunsApiError) => e.status)).toBe(404);
  });

  it("streams every event once, resuming with Last-Event-ID after the connection is cut", async () => {
    const { job_id } = await client.submit({ prompt: "stream", config: simulate(3, 400) });
    const streamRequests: (string | null)[] = [];
    let cut = false;
    // A fetch whose first stream connection dies after the first chunk that carries an event, as a
    // flaky network would.
    const flaky: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!String(input).endsWith("/stream")) return res;
      streamRequests.push(new Headers(init?.headers).get("Last-Event-ID"));
      if (cut) return res;
      cut = true;
      const reader = res.body!.getReader();
      let eventPassed = false;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (eventPassed) {
            await reader.cancel();
            return controller.error(new Error("connection reset"));
          }
          const { done, value } = await reader.read();
          if (done) return controller.close();
          eventPassed = /(^|\n)id: /.test(new TextDecoder().decode(value));
          controller.enqueue(value);
        },
      });
      return new Response(body, { headers: res.headers });
    };
    const events: RunEvent[] = [];
    for await (const event of new RunsClient({ baseUrl: BASE, fetch: flaky }).stream(job_id)) events.push(event);

    expect(streamRequests.length).toBeGreaterThanOrEqual(2);
    expect(streamRequests[0]).toBe("0");
    expect(Number(streamRequests[1])).toBeGreaterThan(0);
    const replay: RunEvent[] = [];
    for await (const event of client.stream(job_id)) replay.push(event);
    expect(events).toEqual(replay);
    expect(events.map((e) => e.id)).toEqual(replay.map((_, i) => i + 1));
    expect(events.at(-1)).toMatchObject({ event: "complete", data: { status: "succeeded" } });
  });
});

function cli(...args: string[]) {
  const run = spawnSync("node", ["cli/runs.mjs", ...args], { env: { ...process.env, RUNS_API_URL: BASE }, encoding: "utf8", timeout: 60_000 });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

describe("the runs CLI", () => {
  it("submits, waits with a progress bar, and prints the result", () => {
    const submitted = cli("submit", "from the cli", "--config", JSON.stringify(simulate(2, 300)), "--json");
    expect(submitted.code).toBe(0);
    const { job_id } = JSON.parse(submitted.stdout) as { job_id: string };

    const waited = cli("wait", job_id, "--json");
    expect(waited.code).toBe(0);
    expect(JSON.parse(waited.stdout)).toMatchObject({ job_id, status: "succeeded" });
    expect(waited.stderr).toMatch(/\[#+-*\] +\d+% /);

    const result = cli("result", job_id);
    expect(result.stdout).toBe("Step 1/2 (step_1): simulated answer to: from the cli\nStep 2/2 (step_2): simulated answer to: from the cli\n");
    const status = cli("status", job_id, "--json");
    expect(JSON.parse(status.stdout)).toMatchObject({ job_id, status: "succeeded" });
    expect(cli("list", "--limit", "1", "--json").code).toBe(0);
  });

  it("streams output, and exits 1 for a job that failed", () => {
    const { job_id } = JSON.parse(cli("submit", "doomed", "--config", JSON.stringify(simulate(2, 100, { fail_at_step: 2 })), "--json").stdout) as { job_id: string };
    const streamed = cli("stream", job_id);
    expect(streamed.stdout).toBe("Step 1/2 (step_1): simulated answer to: doomed\n");
    expect(streamed.code).toBe(1);
    const result = cli("result", job_id);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("Job failed. No result available.");
  });

  it("deletes, with --force for a running job, and says why it cannot", () => {
    const { job_id } = JSON.parse(cli("submit", "long", "--config", JSON.stringify(simulate(3, 5000)), "--json").stdout) as { job_id: string };
    const refused = cli("delete", job_id);
    expect(refused.code).toBe(3);
    expect(refused.stderr.trim()).toBe("Cannot delete running job. Cancel it first.");
    expect(cli("delete", job_id, "--force").code).toBe(0);
    const gone = cli("status", job_id);
    expect(gone.code).toBe(4);
    expect(gone.stderr.trim()).toBe(`Job not found: ${job_id}`);
  });

  it("waits until a job asks for input (exit 6), answers it, and waits for the end", () => {
    const config = JSON.stringify(simulate(2, 100, { input_at_step: 1 }));
    const { job_id } = JSON.parse(cli("submit", "ask me", "--config", config, "--json").stdout) as { job_id: string };
    const asked = cli("wait", job_id);
    expect(asked.code).toBe(6);
    expect(asked.stdout).toContain(`${job_id} awaiting input at step step_1`);
    expect(asked.stdout).toContain("Step 1/2 (step_1): simulated answer to: ask me");
    expect(cli("input", job_id).code).toBe(2);
    expect(cli("input", job_id, "--approve", "--reject", "no").code).toBe(2);
    const answered = cli("input", job_id, "--revise", "louder", "--json");
    expect(answered.code).toBe(0);
    expect(JSON.parse(answered.stdout)).toMatchObject({ job_id, status: "queued", input_request: null });
    const again = cli("wait", job_id, "--json");
    expect(again.code).toBe(6);
    expect(JSON.parse(again.stdout).input_request.output).toContain("(revised after: louder)");
    expect(cli("input", job_id, "--approve", "--note", "fine").code).toBe(0);
    expect(cli("input", job_id, "--approve").code).toBe(3); // answered already: 409
    expect(cli("wait", job_id).code).toBe(0);
  });

  it("submits a bundled recipe, and says when there is no such recipe", () => {
    const submitted = cli("submit", "A text to summarize.", "--recipe", "summarize", "--config", JSON.stringify(simulate(1, 1)), "--json");
    expect(submitted.code).toBe(0);
    const { job_id } = JSON.parse(submitted.stdout) as { job_id: string };
    expect(JSON.parse(cli("status", job_id, "--json").stdout)).toMatchObject({ agent_id: "recipe:summarize" });
    const missing = cli("submit", "x", "--recipe", "nope");
    expect(missing.code).toBe(3);
    expect(missing.stderr.trim()).toBe("Recipe not found: nope");
  });

  it("retries a failed job from where it failed, and waits for the new one", () => {
    const { job_id } = JSON.parse(cli("submit", "flaky", "--config", JSON.stringify(simulate(2, 1, { fail_at_step: 2 })), "--json", "--wait").stdout.split("\n")[0]) as { job_id: string };
    expect(cli("wait", job_id).code).toBe(1);
    const retried = cli("retry", job_id, "--json");
    expect(retried.code).toBe(0);
    const { job_id: again } = JSON.parse(retried.stdout) as { job_id: string };
    expect(JSON.parse(cli("status", again, "--json").stdout)).toMatchObject({ retry_of: job_id, progress: { steps_completed: 1 } });
    expect(cli("retry", again, "--from-step", "0").code).toBe(2);
    expect(cli("retry", "run_nothing").code).toBe(4);
  });

  it("exits 2 on a usage error", () => {
    expect(cli("frobnicate").code).toBe(2);
    expect(cli("status").code).toBe(2);
    expect(cli("list", "--no-such-flag").code).toBe(2);
  });
});
