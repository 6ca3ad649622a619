/** The `runs` CLI against a real `wrangler dev`: every command, what it prints and its exit codes. */
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { BASE } from "./server";
import { simulate } from "./simulate";
import { withServer } from "./with-server";

withServer();

/** A `--config` for the simulated runner (simulate's arguments). */
const simulated = (...args: Parameters<typeof simulate>) => JSON.stringify(simulate(...args));

/** The CLI run to its end against the server, with `env` over the usual. */
function cliWith(env: Record<string, string>, ...args: string[]) {
  const run = spawnSync("node", ["cli/runs.mjs", ...args], { env: { ...process.env, RUNS_API_URL: BASE, ...env }, encoding: "utf8", timeout: 60_000 });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}
const cli = (...args: string[]) => cliWith({}, ...args);

describe("the runs CLI", () => {
  it("submits, waits with a progress bar, and prints the result", () => {
    const submitted = cli("submit", "from the cli", "--config", simulated(2, 300), "--json");
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
    const { job_id } = JSON.parse(cli("submit", "doomed", "--config", simulated(2, 100, { fail_at_step: 2 }), "--json").stdout) as { job_id: string };
    const streamed = cli("stream", job_id);
    expect(streamed.stdout).toBe("Step 1/2 (step_1): simulated answer to: doomed\n");
    // Off a terminal, progress and log go to stderr a line each.
    expect(streamed.stderr).toBe(["  0%", "Job queued", "Job started", "  0% step_1", " 50% step_1", " 50% step_2", "Simulated failure at step 2 of 2", ""].join("\n"));
    expect(streamed.code).toBe(1);
    const result = cli("result", job_id);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("Job failed. No result available.");
  });

  it("deletes, with --force for a running job, and says why it cannot", () => {
    const { job_id } = JSON.parse(cli("submit", "long", "--config", simulated(3, 5000), "--json").stdout) as { job_id: string };
    const refused = cli("delete", job_id);
    expect(refused.code).toBe(3);
    expect(refused.stderr.trim()).toBe("Cannot delete running job. Cancel it first.");
    expect(cli("delete", job_id, "--force").code).toBe(0);
    const gone = cli("status", job_id);
    expect(gone.code).toBe(4);
    expect(gone.stderr.trim()).toBe(`Job not found: ${job_id}`);
  });

  it("waits until a job asks for input (exit 6), answers it, and waits for the end", () => {
    const config = simulated(2, 100, { input_at_step: 1 });
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

  it("mints a token, lists with it, and watches the feed", async () => {
    const session = `cli-token-${Date.now()}`;
    const mine = JSON.parse(cli("submit", "mine", "--session", session, "--tag", "cli", "--config", simulated(1, 1), "--json").stdout) as { job_id: string };
    const minted = cli("token", "--scopes", "read,stream", "--session", session, "--ttl", "120");
    expect(minted.code).toBe(0);
    const token = minted.stdout.trim();
    expect(token).toMatch(/^ert_/);
    const listed = cliWith({ RUNS_API_KEY: token }, "list", "--json");
    expect((JSON.parse(listed.stdout) as { job_id: string }[]).map((j) => j.job_id)).toEqual([mine.job_id]);
    expect(JSON.parse(cli("list", "--tag", "cli", "--session", session, "--json").stdout)).toHaveLength(1);
    expect(cli("token", "--scopes", "read").code).toBe(3); // no reach: 422
    // A token for one end user's browser: its jobs share that user's concurrency key, whatever the browser sends.
    const config = JSON.stringify({ model: "small", max_total_tokens: 1000 });
    const submitter = cli("token", "--scopes", "submit", "--concurrency-key", "cli-user", "--priority", "2", "--config", config, "--metadata", "user=cli-user", "--agent", "recipe:summarize", "--json");
    expect(submitter.code).toBe(0);
    expect(JSON.parse(submitter.stdout)).toMatchObject({
      scopes: ["submit"],
      concurrency_key: "cli-user",
      priority: 2,
      config: { model: "small", max_total_tokens: 1000 },
      agent: "recipe:summarize",
      metadata: { user: "cli-user" },
    });
    expect(cli("token", "--scopes", "submit", "--config", "[1]").code).toBe(2);
    expect(cli("token", "--scopes", "submit", "--agent", "recipe:nope").code).toBe(3); // not bundled: 400
    expect(cli("token").code).toBe(2);

    // `watch` prints a line per change until it is stopped.
    const watch = spawn("node", ["cli/runs.mjs", "watch", "--session", session], { env: { ...process.env, RUNS_API_URL: BASE } });
    let out = "";
    watch.stdout.on("data", (d) => (out += String(d)));
    // Started through tsx: give it time to connect, since the feed starts from now.
    await new Promise((r) => setTimeout(r, 3000));
    const watched = JSON.parse(cli("submit", "watched", "--session", session, "--config", simulated(1, 1), "--json").stdout) as { job_id: string };
    for (let i = 0; i < 100 && !out.includes(`${watched.job_id}  [####################] 100% succeeded`); i++) await new Promise((r) => setTimeout(r, 100));
    watch.kill();
    expect(out).toContain(`${watched.job_id}  [####################] 100% succeeded`);
  });

  it("submits a bundled recipe, and says when there is no such recipe", () => {
    const submitted = cli("submit", "A text to summarize.", "--recipe", "summarize", "--config", simulated(1, 1), "--json");
    expect(submitted.code).toBe(0);
    const { job_id } = JSON.parse(submitted.stdout) as { job_id: string };
    expect(JSON.parse(cli("status", job_id, "--json").stdout)).toMatchObject({ agent_id: "recipe:summarize" });
    const missing = cli("submit", "x", "--recipe", "nope");
    expect(missing.code).toBe(3);
    expect(missing.stderr.trim()).toBe("Recipe not found: nope");
  });

  it("retries a failed job from where it failed, and waits for the new one", () => {
    const { job_id } = JSON.parse(cli("submit", "flaky", "--config", simulated(2, 1, { fail_at_step: 2 }), "--json", "--wait").stdout.split("\n")[0]) as { job_id: string };
    expect(cli("wait", job_id).code).toBe(1);
    const retried = cli("retry", job_id, "--json");
    expect(retried.code).toBe(0);
    const { job_id: again } = JSON.parse(retried.stdout) as { job_id: string };
    expect(JSON.parse(cli("status", again, "--json").stdout)).toMatchObject({ retry_of: job_id, progress: { steps_completed: 1 } });
    expect(cli("retry", again, "--from-step", "0").code).toBe(2);
    // With the failing knob replaced and a new prompt: the first step's output is copied, the second runs on the new prompt.
    const mended = cli("retry", job_id, "--prompt", "steady", "--config", simulated(2, 1), "--wait", "--json");
    expect(mended.code).toBe(0);
    const { job_id: whole } = JSON.parse(mended.stdout.split("\n")[0]) as { job_id: string };
    expect(cli("result", whole).stdout).toBe("Step 1/2 (step_1): simulated answer to: flaky\nStep 2/2 (step_2): simulated answer to: steady\n");
    expect(cli("retry", job_id, "--config", "[1]").code).toBe(2);
    // With a key, a repeat names the job the first made.
    const key = `cli-retry-${Date.now()}`;
    const keyed = JSON.parse(cli("retry", job_id, "--idempotency-key", key, "--json").stdout) as { job_id: string; replayed: boolean };
    expect(keyed.replayed).toBe(false);
    const repeat = cli("retry", job_id, "--idempotency-key", key);
    expect(repeat.code).toBe(0);
    expect(repeat.stdout.trim()).toMatch(new RegExp(`^${keyed.job_id} \\w+ \\(replayed\\)$`));
    expect(cli("retry", "run_nothing").code).toBe(4);
  });

  it("submits with metadata and the line's controls, and refuses an option its command does not read", () => {
    const session = `cli-line-${Date.now()}`;
    const submitted = cli(
      "submit", "later", "--session", session, "--metadata", "user=u-42", "--metadata", "plan=pro", "--priority", "7",
      "--concurrency-key", "u-42", "--delay", "600", "--queue-ttl", "900", "--retention", "3600", "--input-timeout", "120", "--json",
    );
    expect(submitted.code).toBe(0);
    const { job_id, created_at } = JSON.parse(submitted.stdout) as { job_id: string; created_at: string };
    const job = JSON.parse(cli("status", job_id, "--json").stdout);
    expect(job).toMatchObject({ status: "queued", metadata: { user: "u-42", plan: "pro" }, priority: 7, concurrency_key: "u-42" });
    expect(Date.parse(job.scheduled_for) - Date.parse(created_at)).toBe(600_000);
    expect(JSON.parse(cli("list", "--metadata", "user=u-42", "--session", session, "--json").stdout).map((j: { job_id: string }) => j.job_id)).toEqual([job_id]);

    // An option of another command is refused, not ignored, and nothing is submitted.
    const misplaced = cli("submit", "filtered?", "--session", session, "--status", "failed");
    expect(misplaced.code).toBe(2);
    expect(misplaced.stderr).toMatch(/^--status is not an option of submit\n/);
    expect(cli("list", "--force").stderr).toMatch(/^--force is not an option of list\n/);
    expect(cli("submit", "x", "--session", session, "--delay", "soon").stderr).toMatch(/^--delay must be a whole number\n/);
    // The API's validation errors are said one field a line.
    const refused = cli("submit", "x", "--session", session, "--priority", "12", "--delay", "5", "--start-after", "2030-01-01T00:00:00Z");
    expect(refused.code).toBe(3);
    expect(refused.stderr.trim().split("\n")).toEqual([
      "priority: Too big: expected number to be <=9",
      "start_after: Too late: expected a time at most 2592000 seconds from now",
      "start_after: Give delay_seconds or start_after, not both",
    ]);
    expect(JSON.parse(cli("list", "--session", session, "--json").stdout)).toHaveLength(1);
    expect(cli("delete", job_id, "--force").code).toBe(0);
  });

  it("exits 2 on a usage error; help is asked for with help, --help or -h", () => {
    for (const asked of [["help"], ["--help"], ["-h"], ["submit", "--help"]]) {
      expect(cli(...asked)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^usage: runs <command>/), stderr: "" });
    }
    expect(cli()).toMatchObject({ code: 2, stdout: "", stderr: expect.stringMatching(/^usage: runs <command>/) });
    expect(cli("frobnicate").code).toBe(2);
    expect(cli("status").code).toBe(2);
    expect(cli("list", "--no-such-flag").code).toBe(2);
    expect(cli("stream", "run_any", "--after", "abc").stderr).toMatch(/^--after must be a whole number\n/);
  });

  it("deletes a session's jobs in bulk, waiting for the end, and prints the tenant's stats", () => {
    const session = `cli-bulk-${Date.now()}`;
    for (let i = 0; i < 2; i++) expect(cli("submit", `cli bulk ${i}`, "--session", session, "--config", simulated(2, 60_000)).code).toBe(0);
    const stats = JSON.parse(cli("stats", "--json").stdout) as { total_jobs: number; by_status: Record<string, number> };
    expect(stats.by_status.running + stats.by_status.queued).toBeGreaterThanOrEqual(2);
    // Unfinished jobs are skipped without --force.
    const skipped = cli("bulk-delete", "--session", session, "--wait", "--json");
    expect(skipped.code).toBe(0);
    expect(JSON.parse(skipped.stdout)).toMatchObject({ action: "delete", matched: 2, done: 0, skipped: 2, state: "done" });
    const forced = cli("bulk-delete", "--session", session, "--force", "--wait");
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/^bulk_\w+ delete done: 2 done, 0 skipped, 0 failed of 2$/m);
    expect(JSON.parse(cli("list", "--session", session, "--json").stdout)).toEqual([]);
    const none = cli("list", "--session", session);
    expect(none).toMatchObject({ code: 0, stdout: "", stderr: "no jobs match\n" });
    expect(cli("stats").stdout).toMatch(/^\d+ jobs: queued \d+, running \d+, awaiting_input \d+, succeeded \d+, failed \d+, cancelled \d+; \d+ tokens in \d+ model calls$/m);
    // One user's jobs, by metadata, and no one else's.
    const user = `cli-user-${Date.now()}`;
    for (const who of [user, user, `${user}-other`]) expect(cli("submit", "by user", "--metadata", `user=${who}`, "--config", simulated(2, 60_000)).code).toBe(0);
    const erased = cli("bulk-delete", "--metadata", `user=${user}`, "--force", "--wait");
    expect(erased.stdout).toMatch(/^bulk_\w+ delete done: 2 done, 0 skipped, 0 failed of 2$/m);
    expect(JSON.parse(cli("list", "--metadata", `user=${user}`, "--json").stdout)).toEqual([]);
    expect(cli("bulk-delete", "--metadata", `user=${user}-other`, "--force", "--wait").stdout).toMatch(/ 1 done, 0 skipped, 0 failed of 1$/m);
    // No filter, or ids with a filter, and an option bulk does not read: usage errors, in the CLI's words, exit 2.
    for (const args of [[], ["--ids", "run_a", "--status", "queued"]]) {
      const refused = cli("bulk-cancel", ...args);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain("give --ids ID,..., or a filter (--status, --session, --tag, --metadata, --before), not both");
    }
    expect(cli("bulk-cancel", "--status", "queued", "--limit", "3").code).toBe(2);
  });

  it("says why it reached no server at all", async () => {
    const closed = createServer();
    await new Promise<void>((listening) => closed.listen(0, "127.0.0.1", listening));
    const { port } = closed.address() as AddressInfo;
    await new Promise((done) => closed.close(done));
    const { code, stderr } = cliWith({ RUNS_API_URL: `http://127.0.0.1:${port}` }, "status", "run_nowhere");
    expect(stderr.trim()).toBe(`fetch failed: connect ECONNREFUSED 127.0.0.1:${port}`);
    expect(code).toBe(5);
  });
});
