import { existsSync } from 'node:fs';
import { type Browser, chromium } from 'playwright-core';

/** Debian's Chromium: playwright cannot download its own browsers here. */
const CHROMIUM = process.env.MOLT_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Headless Chromium for the browser tests. Without it the test fails, saying how to install it
 * (`.ci/run` does): these tests are never skipped.
 */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`headless Chromium is needed at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (or set MOLT_CHROMIUM to its path)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}
