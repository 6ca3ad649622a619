/** What the local webhook receiver (receiver.ts) and the tests that use it agree on. */
export const RECEIVER_PORT = 18432;
export const RECEIVER_URL = `http://127.0.0.1:${RECEIVER_PORT}`;
export const WEBHOOK_SECRET = `whsec_${btoa("a-test-signing-secret-of-32-bytes")}`;
/** The secret before WEBHOOK_SECRET, for the tests that rotate it (WEBHOOK_SECRET_PREVIOUS). */
export const WEBHOOK_SECRET_PREVIOUS = `whsec_${btoa("the-secret-the-current-one-replaced")}`;

export interface Delivery {
  scenario: string;
  token: string;
  id: string | null;
  timestamp: string | null;
  signature: string | null;
  /** The Standard Webhooks signature checked by the receiver itself, with WEBHOOK_SECRET. */
  verified: boolean;
  /** The same check by a receiver still holding WEBHOOK_SECRET_PREVIOUS. */
  verifiedWithPrevious: boolean;
  body: Record<string, unknown>;
  /** The status it answered with; 0 while it has not answered (the `stall` scenario never does). */
  answered: number;
  /** When it came (ms since the epoch). */
  at: number;
}
