/** What the local webhook receiver (receiver.ts) and the tests that use it agree on. */
export const RECEIVER_PORT = 18432;
export const RECEIVER_URL = `http://127.0.0.1:${RECEIVER_PORT}`;
export const WEBHOOK_SECRET = `whsec_${btoa("a-test-signing-secret-of-32-bytes")}`;

export interface Delivery {
  scenario: string;
  token: string;
  id: string | null;
  timestamp: string | null;
  signature: string | null;
  /** The Standard Webhooks signature checked by the receiver itself. */
  verified: boolean;
  body: Record<string, unknown>;
  /** The status it answered with; 0 while it has not answered (the `stall` scenario never does). */
  answered: number;
}
