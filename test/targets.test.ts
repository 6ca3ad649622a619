import { describe, expect, it } from "vitest";
import { webhookUrlProblem } from "../src/webhooks/targets";
import { post } from "./helpers";

// Private, local and reserved targets, in as many spellings as an attacker might try.
const REFUSED = [
  "http://localhost/hook",
  "http://LOCALHOST:8080/hook",
  "http://localhost./hook",
  "http://api.localhost/hook",
  "http://printer.local/hook",
  "http://metadata.google.internal/computeMetadata/v1/",
  "http://127.0.0.1/hook",
  "http://127.1/hook",
  "http://127.0.1/hook",
  "http://2130706433/hook",
  "http://0x7f000001/hook",
  "http://0x7f.0x0.0x0.0x1/hook",
  "http://0177.0.0.1/hook",
  "http://017700000001/hook",
  "http://0/hook",
  "http://0.0.0.0/hook",
  "http://10.0.0.1/hook",
  "http://10.255.255.255/hook",
  "http://172.16.0.1/hook",
  "http://172.31.255.254/hook",
  "http://192.168.1.1/hook",
  "http://3232235777/hook",
  "http://169.254.169.254/latest/meta-data/",
  "http://0xa9fea9fe/latest/meta-data/",
  "http://100.64.0.1/hook",
  "http://100.127.255.254/hook",
  "http://224.0.0.1/hook",
  "http://239.255.255.250/hook",
  "http://255.255.255.255/hook",
  "http://240.0.0.1/hook",
  "http://198.18.0.1/hook",
  "http://198.19.255.254/hook",
  "http://192.0.2.10/hook",
  "http://192.0.0.8/hook",
  "http://192.88.99.1/hook",
  "http://198.51.100.7/hook",
  "http://203.0.113.9/hook",
  "http://[::1]/hook",
  "http://[0:0:0:0:0:0:0:1]/hook",
  "http://[::]/hook",
  "http://[::ffff:127.0.0.1]/hook",
  "http://[::ffff:7f00:1]/hook",
  "http://[::ffff:10.0.0.1]/hook",
  "http://[::ffff:8.8.8.8]/hook",
  "http://[fc00::1]/hook",
  "http://[fd12:3456:789a::1]/hook",
  "http://[fe80::1]/hook",
  "http://[ff02::1]/hook",
  "http://[64:ff9b::7f00:1]/hook",
  "http://[64:ff9b::a9fe:a9fe]/hook",
  "http://[2002:7f00:1::]/hook",
  "http://[2001:db8::1]/hook",
  "http://[fec0::1]/hook",
  "http://[100::1]/hook",
  "http://[::127.0.0.1]/hook",
];

const ACCEPTED = [
  "https://hooks.example.com/runs",
  "http://example.com:8080/a?b=c",
  "https://93.184.216.34/hook",
  "https://8.8.8.8/hook",
  "https://[2606:4700:4700::1111]/hook",
  "https://[64:ff9b::808:808]/hook",
  "https://172.32.0.1/hook",
  "https://100.128.0.1/hook",
  // The first address past a refused range.
  "https://11.0.0.0/hook",
  "https://172.32.0.0/hook",
  "https://198.20.0.0/hook",
];

describe("webhook targets", () => {
  it(`refuses ${REFUSED.length} spellings of private, local and reserved targets`, () => {
    expect(REFUSED.length).toBeGreaterThanOrEqual(30);
    for (const url of REFUSED) expect(webhookUrlProblem(url, false), url).not.toBeNull();
  });

  it("accepts public hosts and addresses", () => {
    for (const url of ACCEPTED) expect(webhookUrlProblem(url, false), url).toBeNull();
  });

  it.each([
    ["ftp://example.com/hook", "webhook_url must use http or https"],
    ["file:///etc/passwd", "webhook_url must use http or https"],
    ["javascript:alert(1)", "webhook_url must use http or https"],
    ["https://user:secret@example.com/hook", "webhook_url must not carry credentials"],
    ["https://user@example.com/hook", "webhook_url must not carry credentials"],
    ["https://:secret@example.com/hook", "webhook_url must not carry credentials"],
  ])("refuses %s", (url, problem) => {
    expect(webhookUrlProblem(url, false)).toBe(problem);
  });

  it("a development setting allows private targets, never other schemes or credentials", () => {
    expect(webhookUrlProblem("http://127.0.0.1:9000/hook", true)).toBeNull();
    expect(webhookUrlProblem("ftp://127.0.0.1/hook", true)).not.toBeNull();
    expect(webhookUrlProblem("http://a:b@127.0.0.1/hook", true)).not.toBeNull();
  });

  it("every refused target is refused at submit with 422 naming webhook_url, and nothing is stored", async () => {
    for (const webhook_url of [...REFUSED, "https://user:pw@example.com/x"]) {
      const res = await post("/api/v1/runs", { prompt: "x", webhook_url });
      expect(res.status, webhook_url).toBe(422);
      const { detail } = await res.json<{ detail: { loc: string[]; msg: string }[] }>();
      expect(detail[0].loc).toEqual(["body", "webhook_url"]);
    }
    const list = await (await post("/api/v1/runs", { prompt: "ok", webhook_url: "https://hooks.example.com/x" })).json<{ job_id: string }>();
    expect(list.job_id).toMatch(/^run_/);
  });
});
