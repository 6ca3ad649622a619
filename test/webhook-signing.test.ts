import { describe, expect, it } from "vitest";
import { retryDelay, sign } from "../src/webhooks/delivery";

describe("webhook signing and retry timing", () => {
  it("matches the Standard Webhooks reference vector", async () => {
    const signature = await sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}');
    expect(signature).toBe("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  });

  it("backs off exponentially with ±20% jitter, at most six hours", () => {
    expect(retryDelay(1, 10_000, undefined, () => 0.5)).toBe(10_000);
    expect(retryDelay(2, 10_000, undefined, () => 0.5)).toBe(20_000);
    expect(retryDelay(5, 10_000, undefined, () => 0.5)).toBe(160_000);
    expect(retryDelay(1, 10_000, undefined, () => 0)).toBe(8_000);
    expect(retryDelay(1, 10_000, undefined, () => 1)).toBe(12_000);
    expect(retryDelay(40, 10_000, undefined, () => 0.5)).toBe(6 * 3600_000);
    // Retrying at these waits keeps going past a day before the window closes.
    let elapsed = 0;
    let attempts = 0;
    while (elapsed < 86_400_000) elapsed += retryDelay(++attempts, 10_000, undefined, () => 0);
    expect(attempts).toBeLessThan(30);
  });

  it("waits as long as the receiver's Retry-After asks where that is longer, at most six hours", () => {
    expect(retryDelay(1, 10_000, 120_000, () => 0.5)).toBe(120_000);
    expect(retryDelay(1, 10_000, 2_000, () => 0.5)).toBe(10_000);
    expect(retryDelay(1, 10_000, 30 * 3600_000, () => 0.5)).toBe(6 * 3600_000);
  });
});
