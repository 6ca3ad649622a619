/** Debian's Chromium, headless and offline, for the tests of the pages the Worker serves. */
import { chromium, type Browser } from "playwright-core";

/** `args`: Chromium's own switches besides these (say, `--host-resolver-rules` for a name of a test's own). */
export function launchChromium(args: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", ...args],
  });
}
