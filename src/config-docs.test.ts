import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../test/cli-runner.js';
import { describeVariables, loadConfig } from './config.js';

/** The rows of the `| variable | default | meaning |` table under "## Configuration" in the README. */
function readmeConfigurationRows(): { names: string[]; shown: string }[] {
  const readme = fs.readFileSync(path.resolve(import.meta.dirname, '../README.md'), 'utf8').split('\n');
  const section = readme.indexOf('## Configuration');
  const header = readme.findIndex((line, index) => index > section && line.startsWith('| variable | default | meaning |'));
  expect(section, 'a "## Configuration" section').toBeGreaterThan(-1);
  expect(header, 'its | variable | default | meaning | table').toBeGreaterThan(section);
  const rows: { names: string[]; shown: string }[] = [];
  for (const line of readme.slice(header + 2)) {
    if (!line.startsWith('|')) break;
    const [names = '', shown = ''] = line
      .slice(1, -1)
      .split(' | ')
      .map((cell) => cell.trim());
    rows.push({ names: names.split(' / ').map((name) => name.replaceAll('`', '')), shown: shown.replaceAll('`', '') });
  }
  return rows;
}

const byFirstName = (a: { names: string[] }, b: { names: string[] }) => (a.names[0] as string).localeCompare(b.names[0] as string);

describe('configuration documentation', () => {
  it("the README's configuration table has exactly the variables of config.ts, with the same names and defaults", () => {
    const documented = readmeConfigurationRows().sort(byFirstName);
    const defined = describeVariables()
      .map(({ names, shown }) => ({ names, shown }))
      .sort(byFirstName);
    expect(documented).toEqual(defined);
  });

  it('every default shown is one the server accepts, and means the default it uses', () => {
    const defaults = loadConfig({});
    for (const variable of describeVariables()) {
      // Unset, generated or dialect-dependent defaults have no value to type.
      if (defaults[variable.key] === undefined || variable.shown.startsWith('unset')) continue;
      const name = variable.names[0] as string;
      expect(loadConfig({ [name]: variable.shown })[variable.key], `${name}=${variable.shown}`).toEqual(defaults[variable.key]);
    }
  });

  it('dispatcher serve --help lists every variable with its default as typed and its meaning', async () => {
    const help = await runCli(['serve', '--help'], {});
    expect(help.code).toBe(0);
    for (const variable of describeVariables()) {
      expect(help.stdout).toContain(`  ${variable.names.join(' / ')} (default: ${variable.shown})\n      ${variable.doc}\n`);
    }
    // Milliseconds and bytes are how the server stores them, not how anyone sets them.
    expect(help.stdout).not.toMatch(/default: (86400000|3600000|1073741824)/);
  });
});
