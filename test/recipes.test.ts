/** Recipes: agent definitions bundled from recipes/, named at submit by `recipe_name`. */
import { describe, expect, it } from "vitest";
import { parseAgentDefinition, recipeNames } from "../src/runners/agents";
import { BUNDLED_RECIPES } from "../src/runners/recipes.bundle";
import { getJob, post } from "./helpers";

const detailOf = async (res: Response) => (await res.json<{ detail: unknown }>()).detail;

describe("recipes", () => {
  it("bundles recipes/, each a valid agent definition", () => {
    expect(recipeNames().sort()).toEqual(["reviewed-post", "summarize", "triage"]);
    for (const source of Object.values(BUNDLED_RECIPES)) expect(parseAgentDefinition(source).length).toBeGreaterThan(0);
    // The reviewed post asks a person to review its draft.
    expect(parseAgentDefinition(BUNDLED_RECIPES["reviewed-post.yaml"]).map((t) => [t.name, t.human_input ?? false])).toEqual([
      ["draft", true],
      ["polish", false],
    ]);
  });

  // That recipe_config overrides the job's config is seen by a model, in test/model/runner.test.ts.
  it("a job with a recipe and a recipe_config names its recipe as its agent", async () => {
    const res = await post("/api/v1/runs", {
      prompt: "A long text to summarize.",
      recipe_name: "summarize",
      recipe_config: { temperature: 0.1 },
      config: { temperature: 0.9, simulate: { steps: 1, step_ms: 1 } },
    });
    expect(res.status).toBe(202);
    expect((await getJob((await res.json<{ job_id: string }>()).job_id)).agent_id).toBe("recipe:summarize");
  });

  it.each([
    ["a recipe that is not bundled", "nope"],
    ["a path", "../agents/agents"],
    ["a file name", "summarize.yaml"],
  ])("%s → 400 Recipe not found", async (_what, recipe_name) => {
    const res = await post("/api/v1/runs", { prompt: "x", recipe_name });
    expect(res.status).toBe(400);
    expect(await detailOf(res)).toBe(`Recipe not found: ${recipe_name}`);
  });

  it.each([
    ["with agent_file", { recipe_name: "summarize", agent_file: "agents.yaml" }, ["body", "recipe_name"]],
    ["with agent_yaml", { recipe_name: "summarize", agent_yaml: "roles: {}" }, ["body", "recipe_name"]],
    ["recipe_config without a recipe", { recipe_config: { model: "m" } }, ["body", "recipe_config"]],
    ["recipe_config with another key", { recipe_name: "summarize", recipe_config: { simulate: { steps: 1 } } }, ["body", "recipe_config"]],
    ["recipe_config out of range", { recipe_name: "summarize", recipe_config: { temperature: 5 } }, ["body", "recipe_config", "temperature"]],
    ["recipe_config's model empty", { recipe_name: "summarize", recipe_config: { model: "" } }, ["body", "recipe_config", "model"]],
    ["recipe_name not a string", { recipe_name: 7 }, ["body", "recipe_name"]],
  ])("%s → 422", async (_what, fields, loc) => {
    const res = await post("/api/v1/runs", { prompt: "x", ...fields });
    expect(res.status).toBe(422);
    const detail = (await detailOf(res)) as { loc: string[] }[];
    expect(detail.map((d) => d.loc)).toContainEqual(loc);
  });
});
