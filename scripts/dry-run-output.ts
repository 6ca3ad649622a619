/**
 * What `wrangler deploy --dry-run --outdir <dir>` leaves in its directory: the Worker's code, and
 * the files bundled beside it as modules of their own (Swagger UI's and the reference frontend's, as text).
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";

/** Wrangler names a file bundled as a module of its own by its content's SHA-1 and its own name. */
const OWN_MODULE = /^[0-9a-f]{40}-/;

/** The Worker's code, or null when the directory holds none. */
export function codeFile(outdir: string): string | null {
  const name = readdirSync(outdir).find((f) => f.endsWith(".js") && !OWN_MODULE.test(f));
  return name === undefined ? null : join(outdir, name);
}

/** The names of the files bundled beside the code as modules of their own. */
export const moduleFiles = (outdir: string) => readdirSync(outdir).filter((f) => OWN_MODULE.test(f) && !f.endsWith(".map"));
