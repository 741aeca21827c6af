import { parseArgs } from 'node:util';

export type DatabaseKind = 'sqlite' | 'postgres';

export interface BenchOptions {
  databases: DatabaseKind[];
  assets: number;
  /** One load run per entry, on the same imported database (allocations are reset in between). */
  clients: number[];
  durationSeconds: number;
  warmupSeconds: number;
  /** Assets per `importAssets` call (one transaction each); 0 means everything in one call. */
  importBatch: number;
  maxAssets: number;
  /** Server for PostgreSQL administration: the bench creates and drops its own database there. */
  pgUrl: string;
  build: boolean;
  /** Start the server with `--cpu-prof` and print its top self-time functions after each database. */
  profile: boolean;
  help: boolean;
}

export const USAGE = `Usage: npm run bench -- [flags]

  --db sqlite,postgres   databases to benchmark, in order (default: both)
  --assets N             assets imported before the load (default: 1000000)
  --clients N[,N…]       concurrent clients, one load run per value (default: 50)
  --duration S           measured seconds per load run (default: 20)
  --warmup S             unmeasured seconds before each load run (default: 3)
  --import-batch N       assets per importAssets call / transaction; 0 = one call (default: 50000)
  --max-assets N         max_assets sent with each /allocate (default: 3)
  --pg-url URL           PostgreSQL server to create the bench database on
                         (default: postgres://postgres@127.0.0.1:5432/test)
  --no-build             skip \`npm run build\` and use the existing dist/
  --profile              run the server with --cpu-prof and print its top 15 self-time functions
  --help                 this text
`;

function positiveInteger(flag: string, raw: string, allowZero = false): number {
  const value = Number(raw.replace(/_/g, ''));
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1)) throw new Error(`${flag} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got "${raw}"`);
  return value;
}

function positiveNumber(flag: string, raw: string, allowZero = false): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) throw new Error(`${flag} must be a ${allowZero ? 'non-negative' : 'positive'} number, got "${raw}"`);
  return value;
}

function databaseList(raw: string): DatabaseKind[] {
  const names = raw.split(',').map((name) => name.trim().toLowerCase()).filter(Boolean);
  const kinds = names.map((name): DatabaseKind => {
    if (name === 'sqlite') return 'sqlite';
    if (name === 'postgres' || name === 'postgresql' || name === 'pg') return 'postgres';
    throw new Error(`--db takes sqlite and/or postgres, got "${name}"`);
  });
  if (kinds.length === 0) throw new Error('--db needs at least one database');
  return [...new Set(kinds)];
}

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      db: { type: 'string', default: 'sqlite,postgres' },
      assets: { type: 'string', default: '1000000' },
      clients: { type: 'string', default: '50' },
      duration: { type: 'string', default: '20' },
      warmup: { type: 'string', default: '3' },
      'import-batch': { type: 'string', default: '50000' },
      'max-assets': { type: 'string', default: '3' },
      'pg-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/test' },
      'no-build': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  return {
    databases: databaseList(values.db),
    assets: positiveInteger('--assets', values.assets),
    clients: values.clients.split(',').map((raw) => positiveInteger('--clients', raw.trim())),
    durationSeconds: positiveNumber('--duration', values.duration),
    warmupSeconds: positiveNumber('--warmup', values.warmup, true),
    importBatch: positiveInteger('--import-batch', values['import-batch'], true),
    maxAssets: positiveInteger('--max-assets', values['max-assets']),
    pgUrl: values['pg-url'],
    build: !values['no-build'],
    profile: values.profile,
    help: values.help,
  };
}
