import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG_FILE, loadCampaignConfig } from './campaign-config.js';
import { runCampaign } from './campaign.js';
import { openCampaignDatabase } from './database.js';
import { summarize } from './figures.js';
import { writeReport } from './report.js';

const USAGE = `npm run simulate -- [--config FILE] [--nodes N] [--assets N] [--days N] [--seed N] [--postgres [URL]] [--json FILE] [--out DIR]`;
const DEFAULT_POSTGRES = 'postgres://postgres@127.0.0.1:5432/test';

const { values } = parseArgs({
  options: {
    config: { type: 'string' },
    nodes: { type: 'string' },
    assets: { type: 'string' },
    days: { type: 'string' },
    seed: { type: 'string' },
    postgres: { type: 'boolean' },
    'postgres-url': { type: 'string' },
    json: { type: 'string' },
    out: { type: 'string' },
    quiet: { type: 'boolean' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const number = (name: string, raw: string | undefined) => {
  if (raw === undefined) return undefined;
  const parsed = Number(raw);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new Error(`--${name} takes a positive number, not "${raw}"`);
  return parsed;
};

const config = loadCampaignConfig(values.config ?? DEFAULT_CONFIG_FILE, {
  nodes: number('nodes', values.nodes),
  assets: number('assets', values.assets),
  days: number('days', values.days),
  seed: number('seed', values.seed),
});
const postgresUrl = values['postgres-url'] ?? (values.postgres ? (process.env.DATABASE_URL ?? DEFAULT_POSTGRES) : undefined);
const database = await openCampaignDatabase(postgresUrl);
const log = values.quiet ? () => undefined : (line: string) => console.log(line);
log(`campaign: ${config.nodes} nodes, ${config.assets} assets, ${config.days} days, seed ${config.seed}, on ${database.location}`);
try {
  const run = await runCampaign(database.handle, config, log);
  const figures = await summarize(run, postgresUrl === undefined ? 'sqlite' : 'postgres');
  if (values.json) {
    fs.mkdirSync(path.dirname(path.resolve(values.json)), { recursive: true });
    fs.writeFileSync(values.json, `${JSON.stringify(figures, null, 2)}\n`);
  }
  if (values.out) writeReport(values.out, run, figures);
  log(JSON.stringify(figures.headline));
} finally {
  await database.destroy();
}
