/**
 * Agent definitions in PraisonAI's agents.yaml shape, inline or bundled from agents/, turned
 * into the ordered tasks of a run: every role's tasks, in the order the file gives them.
 */
import * as z from "zod/mini";
import { load } from "js-yaml";
import { ApiError } from "../errors";
import { withoutProtoKey } from "../schemas";
import { BUNDLED_AGENTS } from "./agents.bundle";
import { BUNDLED_RECIPES } from "./recipes.bundle";
import type { AgentTask, Revision, StepContext } from "./types";

export const MAX_TASKS = 100;
const MAX_ALIASES = 50;

/** Built on the first definition read, not as the Worker starts (see src/schemas/index.ts). */
function definitionSchema() {
  const text = z.string().check(z.trim(), z.minLength(1));
  const name = z.string().check(z.minLength(1));
  const task = z.looseObject({ description: text, expected_output: text, human_input: z.optional(z.boolean()) });
  const role = z.looseObject({
    role: text,
    goal: text,
    backstory: text,
    tasks: withoutProtoKey(z.record(name, task).check(z.refine((t) => Object.keys(t).length > 0, "a role needs at least one task")), "a task may not be named __proto__"),
  });
  return z.looseObject({
    framework: z.optional(z.string()),
    topic: z.optional(z.string()),
    roles: withoutProtoKey(z.record(name, role).check(z.refine((r) => Object.keys(r).length > 0, "roles must not be empty")), "a role may not be named __proto__"),
  });
}
let agentDefinitionSchema: ReturnType<typeof definitionSchema> | null = null;

export interface AgentPlan {
  agent_id: string;
  tasks: AgentTask[];
}

const AGENT_FILE = /^(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9_][A-Za-z0-9_./-]*\.ya?ml$/;

function invalid(detail: string): ApiError {
  return new ApiError("validation", [{ loc: ["body", "agent_yaml"], msg: detail, type: "value_error" }]);
}

/** Parses and checks a definition; every failure is a 4xx naming what is wrong. */
export function parseAgentDefinition(source: string, where: (detail: string) => ApiError = invalid): AgentTask[] {
  let document: unknown;
  try {
    // Duplicate keys are refused by default; aliases are counted, so that no document expands to more than it says.
    document = load(source, { maxAliases: MAX_ALIASES });
  } catch (error) {
    throw where(`Invalid YAML: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`);
  }
  // Counted before the document is checked, so that aliased task maps cannot multiply the work.
  if (taskCount(document) > MAX_TASKS) throw where(`Not a valid agent definition: more than ${MAX_TASKS} tasks`);
  const result = (agentDefinitionSchema ??= definitionSchema()).safeParse(document);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw where(`Not a valid agent definition: ${issue.path.join(".") || "document"}: ${issue.message}`);
  }
  const tasks = Object.entries(result.data.roles).flatMap(([, role]) =>
    Object.entries(role.tasks).map(([name, task]) => ({
      name,
      role: role.role,
      goal: role.goal,
      backstory: role.backstory,
      description: task.description,
      expected_output: task.expected_output,
      ...(task.human_input ? { human_input: true } : {}),
    })),
  );
  return tasks;
}

/** How many tasks the document's roles hold, as far as its shape can be read (0 where it cannot). */
function taskCount(document: unknown): number {
  const entries = (value: unknown) => (value !== null && typeof value === "object" ? Object.values(value) : []);
  const roles = entries((document as { roles?: unknown } | null)?.roles);
  return roles.reduce<number>((sum, role) => sum + entries((role as { tasks?: unknown } | null)?.tasks).length, 0);
}

/** A recipe's name is its file's in recipes/, without `.yaml`. */
const RECIPE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** The recipes bundled with this deployment, by name. */
export function recipeNames(): string[] {
  return Object.keys(BUNDLED_RECIPES).map((file) => file.replace(/\.ya?ml$/, ""));
}

/** What names a bundled agent in a submission: a job's `agent_id` (`file:<agent_file>`, `recipe:<recipe_name>`) as fields. */
export interface AgentChoice {
  agent_file: string | null;
  agent_yaml: null;
  recipe_name: string | null;
}

/** The submission fields that name the agent an agent id names (`file:…` or `recipe:…`, checked by the token schema's AGENT_ID). */
export function agentChoice(agentId: string): AgentChoice {
  const colon = agentId.indexOf(":");
  const [kind, name] = [agentId.slice(0, colon), agentId.slice(colon + 1)];
  return { agent_file: kind === "file" ? name : null, agent_yaml: null, recipe_name: kind === "recipe" ? name : null };
}

/**
 * The agent a submission names: a bundled recipe (`recipe_name`), `agent_yaml` inline, else
 * `agent_file` (default agents.yaml).
 */
export function resolveAgent(body: { agent_yaml?: string | null; agent_file?: string | null; recipe_name?: string | null }): AgentPlan {
  if (body.recipe_name) {
    const name = body.recipe_name;
    const file = RECIPE_NAME.test(name) ? [`${name}.yaml`, `${name}.yml`].find((f) => f in BUNDLED_RECIPES) : undefined;
    if (file === undefined) throw new ApiError("bad_request", `Recipe not found: ${name}`);
    return { agent_id: `recipe:${name}`, tasks: bundled(`recipes/${file}`, BUNDLED_RECIPES[file]) };
  }
  if (body.agent_yaml) return { agent_id: "yaml:inline", tasks: parseAgentDefinition(body.agent_yaml) };
  const file = body.agent_file || "agents.yaml";
  if (!AGENT_FILE.test(file)) {
    throw new ApiError("bad_request", `agent_file must name a YAML file inside the agents folder: ${file}`);
  }
  const source = BUNDLED_AGENTS[file];
  if (source === undefined) {
    throw new ApiError("bad_request", `Unknown agent_file: ${file}. Available: [${Object.keys(BUNDLED_AGENTS).join(", ")}]`);
  }
  return { agent_id: `file:${file}`, tasks: bundled(`agents/${file}`, source) };
}

/** A bundled definition's tasks, parsed on first use. */
function bundled(path: string, source: string): AgentTask[] {
  let tasks = parsedBundles.get(path);
  if (!tasks) {
    tasks = parseAgentDefinition(source, (detail) => new ApiError("bad_request", `${path}: ${detail}`));
    parsedBundles.set(path, tasks);
  }
  return tasks;
}

/** Bundled files never change while the Worker runs: each is parsed once per isolate. */
const parsedBundles = new Map<string, AgentTask[]>();

const fill = (template: string, topic: string) => template.replaceAll("{topic}", topic);

/**
 * The chat messages of one task: who the agent is, the task, the topic and what came before
 * (with the notes people gave); for a revision, the earlier answer and the person's feedback.
 */
export function taskMessages(task: AgentTask, topic: string, context: StepContext[], revision?: Revision) {
  const system = [`You are ${fill(task.role, topic)}.`, `Your goal: ${fill(task.goal, topic)}`, `Your backstory: ${fill(task.backstory, topic)}`].join("\n");
  const parts = [`Topic: ${topic}`, `Task: ${fill(task.description, topic)}`, `Expected output: ${fill(task.expected_output, topic)}`];
  if (context.length > 0) {
    const note = (c: StepContext) => (c.note ? `\n\nA person's note on it: ${c.note}` : "");
    parts.push(["Context from earlier tasks:", ...context.map((c) => `### ${c.task}\n${c.output}${note(c)}`)].join("\n\n"));
  }
  const messages: { role: "system" | "user" | "assistant"; content: string }[] = [
    { role: "system", content: system },
    { role: "user", content: parts.join("\n\n") },
  ];
  if (revision) {
    messages.push({ role: "assistant", content: revision.answer });
    messages.push({ role: "user", content: `A person reviewed your answer and asks for a revision: ${revision.feedback}\n\nAnswer the task again.` });
  }
  return messages;
}
