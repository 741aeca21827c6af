import { execFile, spawnSync } from 'node:child_process';

/** Whether Prometheus's `promtool` is on the PATH (Debian: `apt-get install prometheus`). */
export const promtoolAvailable = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

/** CI sets DISPATCHER_TEST_PROMTOOL=required: a missing promtool then fails the run instead of skipping. */
if (!promtoolAvailable) {
  if (process.env.DISPATCHER_TEST_PROMTOOL === 'required') {
    throw new Error('promtool is required (DISPATCHER_TEST_PROMTOOL=required) but is not on the PATH; install the "prometheus" package.');
  }
  console.warn('\n*** promtool is not installed: the Prometheus format check of /metrics is SKIPPED (apt-get install prometheus). ***\n');
}

export interface PromtoolResult {
  /** 0: valid and clean; 3: valid with lint problems; 1: not parseable. */
  exitCode: number;
  /** One line per problem found. */
  problems: string[];
}

/** Runs `promtool check metrics` (Prometheus's own parser and linter) on a scrape. */
export function checkWithPromtool(text: string): Promise<PromtoolResult> {
  return new Promise((resolve, reject) => {
    const child = execFile('promtool', ['check', 'metrics'], (error, stdout, stderr) => {
      const exitCode = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      if (exitCode === -1) return reject(error);
      resolve({ exitCode, problems: `${stdout}${stderr}`.split('\n').filter((line) => line.trim() !== '') });
    });
    child.stdin?.end(text);
  });
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * The samples of a scrape, to read values once promtool has accepted its syntax: one
 * `name{label="value",…} number` per line, comments skipped, label values unescaped.
 */
export function readSamples(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1] as string] = (pair[2] as string).replace(/\\(.)/g, (_all, escaped: string) => (escaped === 'n' ? '\n' : escaped));
    }
    samples.push({ name: match[1] as string, labels, value: Number((match[3] as string).replace(/^([+-]?)Inf$/, '$1Infinity')) });
  }
  return samples;
}

/** Families declared with `# TYPE name kind`. */
export function readFamilies(text: string): Map<string, string> {
  const families = new Map<string, string>();
  for (const match of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) families.set(match[1] as string, match[2] as string);
  return families;
}

/** The value of the one sample with this name whose labels include `labels`; undefined when there is none. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}
