import { parseArgs } from 'node:util';

export type DatabaseKind = 'sqlite' | 'postgres';

/** What can be measured; `all` on the command line means every one, in this order. */
export const SUITES = ['fastify', 'raw-claim', 'dispatcher', 'pg-boss', 'graphile-worker', 'restore', 'proofs'] as const;
export type Suite = (typeof SUITES)[number];

/** A queue library's backlog: `deep` is filled beforehand, `shallow` is kept topped up during the run. */
export type QueueBacklog = 'deep' | 'shallow';

export interface BenchOptions {
  suites: Suite[];
  databases: DatabaseKind[];
  assets: number;
  /** One load run per entry, on the same imported database (allocations are reset in between). */
  clients: number[];
  /** Dispatcher server processes sharing one PostgreSQL database, one load run per entry (SQLite: always 1). */
  instances: number[];
  /** raw-claim on PostgreSQL: one run per entry, that many connections each in its own claim loop. */
  rawConnections: number[];
  /** pg-boss / graphile-worker: concurrent fetch loops (or worker concurrency), one run per entry. */
  queueLoops: number[];
  queueBacklogs: QueueBacklog[];
  /** Jobs enqueued before each deep-backlog run. */
  queueJobs: number;
  /** Shallow backlog: topped up by this many whenever fewer are pending. */
  queueShallow: number;
  /** Largest PostgreSQL pool a queue library gets (it gets loops + 2 up to this). */
  queuePool: number;
  durationSeconds: number;
  warmupSeconds: number;
  /** Assets per `importAssets` call (one transaction each); 0 means everything in one call. */
  importBatch: number;
  maxAssets: number;
  /** restore: size of the file restored (its copy is downloaded once by the agent first). */
  restoreBytes: number;
  /** restore: rounds of each path (direct, relayed), alternated. */
  restoreRounds: number;
  /** proofs: rounds of each VERIFY_SPOT_CHECKS setting (0, 3), alternated. */
  proofRounds: number;
  /** proofs: counted copies seeded for the audit load. */
  copies: number;
  /** Server for PostgreSQL administration: the bench creates and drops its own database there. */
  pgUrl: string;
  /** Where the Markdown report goes. */
  resultsFile: string;
  build: boolean;
  /** Start the server with `--cpu-prof` and print its top self-time functions after each database. */
  profile: boolean;
  help: boolean;
}

export const USAGE = `Usage: npm run bench -- [flags]

  --suite NAME[,NAME…]   what to measure (default: all): fastify, raw-claim, dispatcher,
                         pg-boss, graphile-worker, restore, proofs, all
  --db sqlite,postgres   databases to benchmark, in order (default: both)
  --assets N             assets imported before the load (default: 1000000)
  --clients N[,N…]       concurrent HTTP clients, one load run per value (default: 50,200)
  --instances N[,N…]     dispatcher server processes on PostgreSQL, one run per value (default: 1,3)
  --raw-connections N,…  raw-claim connections / loops on PostgreSQL (default: 1,4,16)
  --queue-loops N[,N…]   pg-boss / graphile-worker concurrency (default: 1,8 and the --clients values)
  --queue-backlog B,…    deep (enqueued beforehand) and/or shallow (kept topped up) (default: deep,shallow)
  --queue-jobs N         jobs enqueued before each deep-backlog run (default: 200000)
  --queue-shallow N      shallow backlog: N to 2N jobs pending, topped up every 50 ms (default: 1000)
  --queue-pool N         largest PostgreSQL pool of a queue library; it gets loops + 2 up to this (default: 30)
  --duration S           measured seconds per run (default: 15)
  --warmup S             unmeasured seconds before each run (default: 3)
  --import-batch N       assets per importAssets call / transaction; 0 = one call (default: 50000)
  --max-assets N         max_assets sent with each /allocate (default: 1, one item per call
                         as the raw claim and the queue libraries take)
  --restore-bytes N      restore: size of the file, bytes or with KiB/MiB/GiB (default: 1GiB)
  --restore-rounds N     restore: rounds of each of direct and relayed, alternated (default: 3)
  --proof-rounds N       proofs: rounds of each of VERIFY_SPOT_CHECKS=0 and =3, alternated (default: 2)
  --copies N             proofs: counted copies seeded for the audit load (default: 1000000)
  --pg-url URL           PostgreSQL server to create the bench database on
                         (default: postgres://postgres@127.0.0.1:5432/test)
  --results FILE         Markdown report (default: bench/RESULTS.md)
  --no-build             skip \`npm run build\` and use the existing dist/
  --profile              run the server with --cpu-prof and print its top 15 self-time functions
  --help                 this text
`;

function positiveInteger(flag: string, raw: string, allowZero = false): number {
  const value = Number(raw.replace(/_/g, ''));
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1))
    throw new Error(`${flag} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got "${raw}"`);
  return value;
}

function positiveNumber(flag: string, raw: string, allowZero = false): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0))
    throw new Error(`${flag} must be a ${allowZero ? 'non-negative' : 'positive'} number, got "${raw}"`);
  return value;
}

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, kib: 1024, k: 1024, mib: 1024 ** 2, m: 1024 ** 2, gib: 1024 ** 3, g: 1024 ** 3 };

/** A positive size: plain bytes, or with a binary unit (`256MiB`, `1GiB`). */
function byteSize(flag: string, raw: string): number {
  const match = /^([\d_]+(?:\.\d+)?)\s*([a-z]*)$/i.exec(raw.trim());
  const unit = BYTE_UNITS[(match?.[2] ?? '').toLowerCase()];
  const value = match && unit !== undefined ? Math.round(Number((match[1] as string).replace(/_/g, '')) * unit) : NaN;
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${flag} must be a positive size (bytes, or e.g. 256MiB, 1GiB), got "${raw}"`);
  return value;
}

function integerList(flag: string, raw: string): number[] {
  return [...new Set(raw.split(',').map((part) => positiveInteger(flag, part.trim())))];
}

function databaseList(raw: string): DatabaseKind[] {
  const names = raw
    .split(',')
    .map((name) => name.trim().toLowerCase())
    .filter(Boolean);
  const kinds = names.map((name): DatabaseKind => {
    if (name === 'sqlite') return 'sqlite';
    if (name === 'postgres' || name === 'postgresql' || name === 'pg') return 'postgres';
    throw new Error(`--db takes sqlite and/or postgres, got "${name}"`);
  });
  if (kinds.length === 0) throw new Error('--db needs at least one database');
  return [...new Set(kinds)];
}

function suiteList(raw: string): Suite[] {
  const names = raw
    .split(',')
    .map((name) => name.trim().toLowerCase())
    .filter(Boolean);
  if (names.includes('all')) return [...SUITES];
  for (const name of names) {
    if (!(SUITES as readonly string[]).includes(name)) throw new Error(`--suite takes ${SUITES.join(', ')} or all, got "${name}"`);
  }
  if (names.length === 0) throw new Error('--suite needs at least one suite');
  // Always in the canonical order, so a report reads the same whatever order the flag listed.
  return SUITES.filter((suite) => names.includes(suite));
}

function backlogList(raw: string): QueueBacklog[] {
  const names = [
    ...new Set(
      raw
        .split(',')
        .map((name) => name.trim().toLowerCase())
        .filter(Boolean),
    ),
  ];
  if (names.length === 0 || names.some((name) => name !== 'deep' && name !== 'shallow'))
    throw new Error(`--queue-backlog takes deep and/or shallow, got "${raw}"`);
  return names as QueueBacklog[];
}

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      suite: { type: 'string', default: 'all' },
      db: { type: 'string', default: 'sqlite,postgres' },
      assets: { type: 'string', default: '1000000' },
      clients: { type: 'string', default: '50,200' },
      instances: { type: 'string', default: '1,3' },
      'raw-connections': { type: 'string', default: '1,4,16' },
      'queue-loops': { type: 'string' },
      'queue-backlog': { type: 'string', default: 'deep,shallow' },
      'queue-jobs': { type: 'string', default: '200000' },
      'queue-shallow': { type: 'string', default: '1000' },
      'queue-pool': { type: 'string', default: '30' },
      duration: { type: 'string', default: '15' },
      warmup: { type: 'string', default: '3' },
      'import-batch': { type: 'string', default: '50000' },
      'max-assets': { type: 'string', default: '1' },
      'restore-bytes': { type: 'string', default: '1GiB' },
      'restore-rounds': { type: 'string', default: '3' },
      'proof-rounds': { type: 'string', default: '2' },
      copies: { type: 'string', default: '1000000' },
      'pg-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/test' },
      results: { type: 'string', default: 'bench/RESULTS.md' },
      'no-build': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  const clients = integerList('--clients', values.clients);
  const queueLoops = values['queue-loops'] === undefined ? [...new Set([1, 8, ...clients])] : integerList('--queue-loops', values['queue-loops']);
  return {
    suites: suiteList(values.suite),
    databases: databaseList(values.db),
    assets: positiveInteger('--assets', values.assets),
    clients,
    instances: integerList('--instances', values.instances),
    rawConnections: integerList('--raw-connections', values['raw-connections']),
    queueLoops: queueLoops.sort((a, b) => a - b),
    queueBacklogs: backlogList(values['queue-backlog']),
    queueJobs: positiveInteger('--queue-jobs', values['queue-jobs']),
    queueShallow: positiveInteger('--queue-shallow', values['queue-shallow']),
    queuePool: Math.max(2, positiveInteger('--queue-pool', values['queue-pool'])),
    durationSeconds: positiveNumber('--duration', values.duration),
    warmupSeconds: positiveNumber('--warmup', values.warmup, true),
    importBatch: positiveInteger('--import-batch', values['import-batch'], true),
    maxAssets: positiveInteger('--max-assets', values['max-assets']),
    restoreBytes: byteSize('--restore-bytes', values['restore-bytes']),
    restoreRounds: positiveInteger('--restore-rounds', values['restore-rounds']),
    proofRounds: positiveInteger('--proof-rounds', values['proof-rounds']),
    copies: positiveInteger('--copies', values.copies),
    pgUrl: values['pg-url'],
    resultsFile: values.results,
    build: !values['no-build'],
    profile: values.profile,
    help: values.help,
  };
}
