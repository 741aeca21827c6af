import fs from 'node:fs';
import path from 'node:path';
import type { SuiteContext } from './http-suites.js';
import { formatProfile } from './profile-top.js';

/** With --profile: a directory for one server's `--cpu-prof` output, named after the run and what it served. */
export function profileDirectoryFor(context: SuiteContext, label: string): string | undefined {
  if (!context.options.profile) return undefined;
  const directory = path.join(context.outDirectory, 'profiles', `${context.stamp}-proofs-${label}`);
  fs.mkdirSync(directory, { recursive: true });
  return directory;
}

/** After the server stopped: its top 15 functions by self time. */
export function printProfiles(context: SuiteContext, directory: string | undefined, what: string): void {
  if (!directory) return;
  for (const file of fs.readdirSync(directory).filter((name) => name.endsWith('.cpuprofile'))) {
    context.log(`\n  ${what}: server CPU profile, top 15 by self time:\n${formatProfile(path.join(directory, file), 15)}`);
  }
}
