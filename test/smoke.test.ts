import { SELF, env, runDurableObjectAlarm } from "cloudflare:test";
import { expect, it } from "vitest";

it("submits and runs a job", async () => {
  const res = await SELF.fetch("http://localhost/api/v1/runs", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hello", config: { simulate: { steps: 2, step_ms: 5 } } }),
  });
  const body = await res.json<any>();
  console.log(res.status, body);
  const stub = env.RUNS.getByName(`default/${body.job_id}`);
  console.log(await runDurableObjectAlarm(stub));
  console.log(await (await SELF.fetch(body.poll_url)).json());
  console.log(await runDurableObjectAlarm(stub));
  console.log(await (await SELF.fetch(body.poll_url)).json());
  console.log(await (await SELF.fetch(body.poll_url + "/result")).json());
  console.log(await (await SELF.fetch("http://localhost/api/v1/runs")).json());
  const s = await SELF.fetch(body.stream_url);
  console.log(await s.text());
  const d = await SELF.fetch(body.poll_url, { method: "DELETE" });
  console.log(d.status, await d.text());
  console.log(await (await SELF.fetch(body.poll_url)).json());
  expect(res.status).toBe(202);
});
