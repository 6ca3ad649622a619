/** The build's version: the package's, and on Cloudflare the deployed Worker version's id. */
import { version } from "../package.json";

export const VERSION: string = version;

export function buildVersion(env: Env): string {
  const id = (env.CF_VERSION_METADATA as WorkerVersionMetadata | undefined)?.id;
  return id ? `${VERSION}+${id.slice(0, 8)}` : VERSION;
}
