/**
 * Each tenant's live feed, watched through the kills as a frontend does: opened again after the
 * last event it had whenever it ends. Its ids must rise with no repeat and no `reset`, it must tell
 * nothing of the other tenant, and it must come to every job's last status and every deletion.
 */
import { eachEvent, service } from "./service";
import { FEED_START, TENANTS, TERMINAL, feedIdRose, jobs, keys, live, problem, sleep, type Tenant } from "./world";

interface FeedWatch {
  tenant: Tenant;
  /** The last event's id (on shards, every shard's position): each connection resumes after it. */
  last: string;
  /** Each job's last status the feed told, and the jobs it told deleted. */
  told: Map<string, string>;
  deleted: Set<string>;
  connections: number;
  events: number;
  stopped: AbortController;
}
export const feeds = TENANTS.map((tenant): FeedWatch => ({ tenant, last: FEED_START, told: new Map(), deleted: new Set(), connections: 0, events: 0, stopped: new AbortController() }));

/** Reads the tenant's feed as a frontend does, opening it again after the last event it had whenever it ends. */
export async function watchFeed(watch: FeedWatch): Promise<void> {
  const auth = { authorization: `Bearer ${keys.get(watch.tenant)![0]}` };
  while (!watch.stopped.signal.aborted) {
    if (service.up) {
      try {
        const res = await fetch(`${service.base}/api/v1/runs/events?after=${watch.last}`, { headers: auth, signal: watch.stopped.signal });
        if (res.status === 200 && res.body) {
          watch.connections++;
          await eachEvent(res.body, (block) => feedEvent(watch, block));
        } else if (res.status !== 429 && res.status !== 503) problem(`${watch.tenant}'s feed → ${res.status} ${await res.text()}`);
      } catch {
        // The server was killed (or the watch stopped): open it again once the server is up.
      }
    }
    await sleep(200);
  }
}

function feedEvent(watch: FeedWatch, block: string): void {
  const event = /^event: (.*)$/m.exec(block)?.[1];
  const id = /^id: (.*)$/m.exec(block)?.[1];
  const data = /^data: (.*)$/m.exec(block)?.[1];
  if (!event) return; // a ping
  watch.events++;
  if (event === "reset") problem(`${watch.tenant}'s feed, resumed after ${watch.last}, was reset (id ${id})`);
  else if (id === undefined || !feedIdRose(watch.last, id)) problem(`${watch.tenant}'s feed told ${event} ${id} after ${watch.last}`);
  if (id !== undefined) watch.last = id;
  const jobId: string | undefined = data ? JSON.parse(data).job_id : undefined;
  if (!jobId) return;
  const owner = jobs.find((j) => j.id === jobId)?.tenant;
  if (owner && owner !== watch.tenant) problem(`${watch.tenant}'s feed told ${event} of ${owner}'s job ${jobId}`);
  if (event === "run") watch.told.set(jobId, JSON.parse(data!).status);
  else if (event === "deleted") watch.deleted.add(jobId);
}

/** Each tenant's feed comes to every job's last status, and told every deletion of a job it had told. */
export async function checkFeeds(): Promise<void> {
  const wrong = () =>
    feeds.flatMap((watch) => [
      ...live(watch.tenant)
        .filter((j) => watch.told.get(j.id) !== j.status || watch.deleted.has(j.id))
        .map((j) => `${watch.tenant}'s feed has ${j.id} ${watch.deleted.has(j.id) ? "deleted" : watch.told.get(j.id) ?? "never told"}, which is ${j.status}`),
      ...jobs
        .filter((j) => j.tenant === watch.tenant && j.gone === true && watch.told.has(j.id) && !watch.deleted.has(j.id))
        .map((j) => `${watch.tenant}'s feed never told ${j.id} deleted (last told ${watch.told.get(j.id)})`),
      ...jobs
        .filter((j) => j.tenant === watch.tenant && j.purged && !TERMINAL.has(watch.told.get(j.id)!))
        .map((j) => `${watch.tenant}'s feed told ${j.id}, purged at the end of its retention, ${watch.told.get(j.id) ?? "never"} before its deletion`),
    ]);
  const deadline = Date.now() + 30_000;
  while (wrong().length > 0 && Date.now() < deadline) await sleep(1000);
  for (const text of wrong()) problem(text);
}
