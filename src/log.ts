/**
 * The service's one logger: a JSON line per request, per job transition and per failure, read
 * by Workers Logs. Only the fields named here are ever written: never a key, token, prompt or
 * output.
 */

export interface RequestLine {
  request_id: string;
  tenant: string | null;
  method: string;
  /** The route's template, `/api/v1/runs/:id`, never the raw URL. */
  route: string;
  status: number;
  duration_ms: number;
  job_id: string | null;
}

export interface TransitionLine {
  job_id: string;
  tenant: string;
  from: string;
  to: string;
  /** Steps completed when the status changed. */
  step: number;
  error: string | null;
  /** The request that submitted the job, so that one id follows it through its life. */
  request_id: string | null;
}

export function logRequest(line: RequestLine): void {
  console.log(JSON.stringify({ event: "request", ...line }));
}

export function logTransition(line: TransitionLine): void {
  console.log(JSON.stringify({ event: "transition", ...line }));
}

/** Something went wrong that the service recovers from (or answers 500 for): what, and the error's name and first line. */
export function logFailure(what: string, error: unknown, fields: { job_id?: string; tenant?: string; request_id?: string; bulk_id?: string } = {}): void {
  const message = error instanceof Error ? `${error.name}: ${error.message.split("\n")[0]}` : String(error).split("\n")[0];
  console.error(JSON.stringify({ event: "failure", what, error: message, ...fields }));
}
