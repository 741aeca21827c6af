import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';

/** Debian's chromium (`apt-get install chromium`): the tests drive it, and never download a browser. */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/** Whether the browser tests can run; CI sets DISPATCHER_TEST_BROWSER=required, and then a missing browser fails the run. */
export const browserAvailable = fs.existsSync(CHROMIUM_PATH);
if (!browserAvailable) {
  if (process.env.DISPATCHER_TEST_BROWSER === 'required') {
    throw new Error(`Chromium is required (DISPATCHER_TEST_BROWSER=required) but ${CHROMIUM_PATH} is missing; install Debian's "chromium" package.`);
  }
  console.warn(`\n*** ${CHROMIUM_PATH} is missing: the dashboard's browser tests are SKIPPED (apt-get install chromium). ***\n`);
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    // Offline and quiet: nothing is fetched from the internet, no first-run or sync traffic.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/** Screenshots of the dashboard, kept after the run (git-ignored). */
export const SCREENSHOT_DIRECTORY = path.resolve(import.meta.dirname, '../test-artifacts/ui');
