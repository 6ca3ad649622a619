/** Debian's Chromium, headless and offline, for the tests of the pages the Worker serves. */
import { chromium, type Browser } from "playwright-core";

/** `args`: Chromium's own switches besides these (say, `--host-resolver-rules` for a name of a test's own). */
export function launchChromium(args: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", ...args],
  });
}

/**
 * Chromium that finds this machine at a name of the tests' own as well, and the origin of a server
 * of this machine (its `base`) at that name. Unlike localhost, no browser counts a page there a
 * secure context, so the page has none of what browsers keep for one (`crypto.randomUUID`, say),
 * as a phone on the LAN opening the service over plain HTTP has none.
 */
export const INSECURE_NAME = "runs.lan";
export const launchChromiumWithInsecureName = () => launchChromium([`--host-resolver-rules=MAP ${INSECURE_NAME} 127.0.0.1`]);
export const insecureOrigin = (base: string) => `http://${INSECURE_NAME}:${new URL(base).port}`;
