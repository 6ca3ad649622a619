const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ID_CHARS = 24; // 24 base62 characters: ~143 bits from the CSPRNG

/** A new unguessable job id: `run_` + 24 characters of [A-Za-z0-9]. */
export function newJobId(): string {
  const out: string[] = [];
  // Rejection sampling keeps every character uniform (256 is not a multiple of 62).
  while (out.length < ID_CHARS) {
    for (const byte of crypto.getRandomValues(new Uint8Array(32))) {
      if (byte < 248 && out.length < ID_CHARS) out.push(ALPHABET[byte % 62]);
    }
  }
  return `run_${out.join("")}`;
}

const JOB_ID = /^run_[A-Za-z0-9_-]{1,128}$/;

/** Ids not of the contract's form can never name a job: they are answered like unknown ids. */
export function isJobId(id: string): boolean {
  return JOB_ID.test(id);
}

/** The Durable Object name of a job: tenant and id, so another tenant's id reaches an empty object. */
export function runObjectName(tenant: string, jobId: string): string {
  return `${tenant}/${jobId}`;
}

/** The tenant a tenant's object (its line, its projection) belongs to: the name it is addressed by. */
export function tenantOf(ctx: DurableObjectState): string {
  const name = ctx.id.name;
  if (!name) throw new Error("A tenant's object must be addressed by its tenant's name");
  return name;
}
