import { describe, expect, it } from "vitest";
import { BUNDLED_AGENTS } from "../src/runners/agents.bundle";
import { getJob, post } from "./helpers";

const VALID = `
roles:
  analyst:
    role: Analyst
    goal: Analyse {topic}
    backstory: Thorough.
    tasks:
      analyse:
        description: Analyse {topic}
        expected_output: Findings
`;

describe("agent definitions at submit", () => {
  it("bundles the project's agents/ folder, with the default agents.yaml", () => {
    expect(Object.keys(BUNDLED_AGENTS)).toContain("agents.yaml");
  });

  it("records which definition a job runs", async () => {
    const inline = await post("/api/v1/runs", { prompt: "x", agent_yaml: VALID });
    expect((await getJob((await inline.json<{ job_id: string }>()).job_id)).agent_id).toBe("yaml:inline");
    const file = await post("/api/v1/runs", { prompt: "x", agent_file: "agents.yaml" });
    expect((await getJob((await file.json<{ job_id: string }>()).job_id)).agent_id).toBe("file:agents.yaml");
  });

  it.each([
    ["YAML that does not parse", "roles: [unclosed", "Invalid YAML: "],
    ["a document that is not a mapping", "- just\n- a list", "Not a valid agent definition: document: "],
    ["no roles", "topic: x", "Not a valid agent definition: roles: "],
    ["empty roles", "roles: {}", "Not a valid agent definition: roles: roles must not be empty"],
    ["a role without a goal", VALID.replace("    goal: Analyse {topic}\n", ""), "Not a valid agent definition: roles.analyst.goal: "],
    ["a role without tasks", VALID.split("    tasks:")[0] + "    tasks: {}\n", "Not a valid agent definition: roles.analyst.tasks: a role needs at least one task"],
    ["a task without expected_output", VALID.replace("        expected_output: Findings\n", ""), "Not a valid agent definition: roles.analyst.tasks.analyse.expected_output: "],
    ["duplicate keys", "roles: {}\nroles: {}", "Invalid YAML: "],
    // A map may hold the key __proto__, which would otherwise be dropped without a word, and the role or task with it.
    ["a role named __proto__ beside another", `${VALID}  __proto__:\n    role: R\n    goal: G\n    backstory: B\n    tasks:\n      t:\n        description: D\n        expected_output: E\n`, "Not a valid agent definition: roles.__proto__: a role may not be named __proto__"],
    ["a task named __proto__ beside another", `${VALID}      __proto__:\n        description: D\n        expected_output: E\n`, "Not a valid agent definition: roles.analyst.tasks.__proto__: a task may not be named __proto__"],
    ["an alias bomb", `a: &a [x, x, x, x, x, x, x, x, x]\n${Array.from({ length: 60 }, (_, i) => `b${i}: [*a, *a, *a, *a]`).join("\n")}`, "Invalid YAML: "],
  ])("%s → 422 naming agent_yaml", async (_name, agent_yaml, message) => {
    const res = await post("/api/v1/runs", { prompt: "x", agent_yaml });
    expect(res.status).toBe(422);
    const { detail } = await res.json<{ detail: { loc: string[]; msg: string }[] }>();
    expect(detail[0].loc).toEqual(["body", "agent_yaml"]);
    expect(detail[0].msg.startsWith(message), detail[0].msg).toBe(true);
  });

  it("more than 100 tasks → 422", async () => {
    const tasks = Array.from({ length: 101 }, (_, i) => `      t${i}:\n        description: d\n        expected_output: e`).join("\n");
    const res = await post("/api/v1/runs", { prompt: "x", agent_yaml: `roles:\n  r:\n    role: R\n    goal: G\n    backstory: B\n    tasks:\n${tasks}\n` });
    expect(res.status).toBe(422);
    expect((await res.json<{ detail: { msg: string }[] }>()).detail[0].msg).toBe("Not a valid agent definition: more than 100 tasks");
  });

  it("task maps repeated by aliases count each time: 40 roles sharing 3 tasks are 120 → 422", async () => {
    const shared = "  r0:\n    role: R\n    goal: G\n    backstory: B\n    tasks: &tasks\n" + ["a", "b", "c"].map((t) => `      ${t}: {description: d, expected_output: e}`).join("\n");
    const more = Array.from({ length: 39 }, (_, i) => `  r${i + 1}: {role: R, goal: G, backstory: B, tasks: *tasks}`).join("\n");
    const res = await post("/api/v1/runs", { prompt: "x", agent_yaml: `roles:\n${shared}\n${more}\n` });
    expect(res.status).toBe(422);
    expect((await res.json<{ detail: { msg: string }[] }>()).detail[0].msg).toBe("Not a valid agent definition: more than 100 tasks");
  });

  it("an unknown agent_file → 400 listing what is bundled", async () => {
    const res = await post("/api/v1/runs", { prompt: "x", agent_file: "missing.yaml" });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ detail: `Unknown agent_file: missing.yaml. Available: [${Object.keys(BUNDLED_AGENTS).join(", ")}]` });
  });
});
