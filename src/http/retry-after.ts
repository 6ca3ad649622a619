/**
 * How long an answer asks to wait before it is tried again: OpenAI's `retry-after-ms` where it
 * is sent, else `Retry-After`, in seconds or as a date (RFC 9110); undefined when it names no
 * wait. The caller bounds it.
 */
export function retryAfterMs(headers: Headers): number | undefined {
  const ms = Number(headers.get("retry-after-ms")?.trim() || Number.NaN);
  if (Number.isFinite(ms) && ms >= 0) return ms;
  const header = headers.get("retry-after")?.trim();
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return seconds >= 0 ? seconds * 1000 : undefined;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}
