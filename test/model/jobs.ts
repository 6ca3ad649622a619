/**
 * What the model runner's tests share: a topic of each test's own, by which the local model server
 * tells one test's requests from another's (`requestsFor`), a job submitted with it as its prompt,
 * and an agent of three tasks with the answers the server gives them.
 */
import { beforeEach, expect } from "vitest";
import { api, post } from "../helpers";
import { answerFor } from "./protocol";

export const THREE_TASKS = `
topic: unused
roles:
  researcher:
    role: Researcher of {topic}
    goal: Find facts about {topic}
    backstory: Careful and brief.
    tasks:
      gather:
        description: Gather facts about {topic}
        expected_output: Bullet points
      check:
        description: Check the facts
        expected_output: Corrections
  writer:
    role: Writer
    goal: Explain {topic}
    backstory: Plain words.
    tasks:
      write:
        description: Write the answer
        expected_output: Paragraphs
`;

/** The running test's topic. */
export let topic = "";

let counter = 0;
/** Gives each test of the file a topic of its own, named after the file (`prefix`) so that no other file's can be the same. */
export function topicPerTest(prefix: string): void {
  beforeEach(() => {
    topic = `${prefix}-${Date.now()}-${++counter}`;
  });
}

export async function submitModel(body: Record<string, unknown> = {}): Promise<string> {
  const res = await post("/api/v1/runs", { prompt: topic, ...body });
  expect(res.status).toBe(202);
  return (await res.json<{ job_id: string }>()).job_id;
}

/** THREE_TASKS' task descriptions for this test's topic, in order, and the answers the local server gives them. */
export const threeTasks = () => [`Gather facts about ${topic}`, "Check the facts", "Write the answer"];
export const threeAnswers = () => threeTasks().map((task) => answerFor(task, topic));

export const resultOf = async (id: string) => (await (await api(`/api/v1/runs/${id}/result`)).json<{ result: string }>()).result;
