import type { ImportResult } from './dataset.js';
import type { BenchOptions, DatabaseKind } from './options.js';
import {
  DETAIL_HEADERS,
  detailCells,
  errorLines,
  formatMachine,
  integer,
  MAIN_HEADERS,
  mainCells,
  markdownTable,
  otherCpu,
  table,
  type Machine,
} from './report.js';
import { restoreConditions, restoreDisturbance, restoreHeadlines, restoreMarkdown } from './restore-report.js';
import type { RestoreRun } from './restore.js';
import type { MeasuredRow } from './rows.js';

/** One headline figure: a ratio (or a bound) with its target, or an informational comparison. */
export interface Headline {
  name: string;
  value: string;
  target: string;
  verdict: 'pass' | 'FAIL' | 'not measured' | 'info';
  /** The figures the value came from. */
  detail: string;
}

/** The issue's targets. */
const TARGETS = { overFastify: 0.5, overPgBoss: 1.5, overRawClaim: 1, p99Ms: 25 };

interface Picks {
  clients: number;
  instances: number;
  rawConnections: number;
  restoreBytes: number;
  restoreRounds: number;
}

const dispatcher = (rows: MeasuredRow[], database: DatabaseKind, instances: number, clients: number) =>
  rows.find((row) => row.suite === 'dispatcher' && row.database === database && row.instances === instances && row.result.concurrency === clients);
const bySuite = (rows: MeasuredRow[], suite: MeasuredRow['suite'], concurrency: number, database?: DatabaseKind, subject?: string) =>
  rows.find(
    (row) =>
      row.suite === suite &&
      row.result.concurrency === concurrency &&
      (database === undefined || row.database === database) &&
      (subject === undefined || row.subject === subject),
  );
/** A queue library's best run at this concurrency, whatever its backlog: the comparison must not flatter Dispatcher. */
const bestQueue = (rows: MeasuredRow[], suite: 'pg-boss' | 'graphile-worker', concurrency: number) =>
  rows
    .filter((row) => row.suite === suite && row.result.concurrency === concurrency)
    .reduce<MeasuredRow | undefined>((best, row) => (!best || row.result.okPerSecond > best.result.okPerSecond ? row : best), undefined);

function describe(row: MeasuredRow): string {
  const where = [row.database, row.instances ? `${row.instances} inst` : undefined, `×${row.result.concurrency}`].filter(Boolean).join(' ');
  const queued = row.suite === 'pg-boss' || row.suite === 'graphile-worker' ? `, ${row.subject.slice(row.subject.lastIndexOf(', ') + 2)}` : '';
  const claim = row.suite === 'raw-claim' ? ` (${row.subject})` : '';
  return `${row.suite}${claim} ${where}${queued}`;
}

/** Numerator ÷ denominator on calls that succeeded per second; items per second shown beside it. */
function ratio(name: string, top: MeasuredRow | undefined, bottom: MeasuredRow | undefined, target?: number): Headline {
  const targetText = target === undefined ? '-' : `≥ ${target}×`;
  if (!top || !bottom || bottom.result.okPerSecond === 0)
    return { name, value: '-', target: targetText, verdict: 'not measured', detail: 'a run it needs was not part of this run' };
  const value = top.result.okPerSecond / bottom.result.okPerSecond;
  const items =
    bottom.result.itemsPerSecond > 0 && bottom.suite !== 'fastify'
      ? `; items/s ${integer(top.result.itemsPerSecond)} ÷ ${integer(bottom.result.itemsPerSecond)} = ${(top.result.itemsPerSecond / bottom.result.itemsPerSecond).toFixed(2)}×`
      : '';
  return {
    name,
    value: `${value.toFixed(2)}×`,
    target: targetText,
    verdict: target === undefined ? 'info' : value >= target ? 'pass' : 'FAIL',
    detail: `calls/s ${integer(top.result.okPerSecond)} (${describe(top)}) ÷ ${integer(bottom.result.okPerSecond)} (${describe(bottom)})${items}`,
  };
}

function p99Bound(rows: MeasuredRow[], clients: number): Headline {
  const name = `/allocate p99 at ${clients} clients, every database and instance count`;
  const candidates = rows.filter((row) => row.suite === 'dispatcher' && row.result.concurrency === clients && row.result.latencyMs);
  if (candidates.length === 0)
    return { name, value: '-', target: `< ${TARGETS.p99Ms} ms`, verdict: 'not measured', detail: 'no /allocate run at this client count' };
  const worst = candidates.reduce((a, b) => ((a.result.latencyMs?.p99 ?? 0) >= (b.result.latencyMs?.p99 ?? 0) ? a : b));
  const p99 = worst.result.latencyMs?.p99 ?? 0;
  return {
    name,
    value: `${p99.toFixed(1)} ms`,
    target: `< ${TARGETS.p99Ms} ms`,
    verdict: p99 < TARGETS.p99Ms ? 'pass' : 'FAIL',
    detail: `worst: ${describe(worst)}; all: ${candidates.map((row) => `${describe(row)} ${(row.result.latencyMs?.p99 ?? 0).toFixed(1)}`).join(', ')}`,
  };
}

function noDuplicates(rows: MeasuredRow[]): Headline {
  const checked = rows.filter((row) => row.check.duplicates !== undefined);
  const total = checked.reduce((sum, row) => sum + (row.check.duplicates ?? 0), 0);
  const bad = checked.filter((row) => (row.check.duplicates ?? 0) > 0).map(describe);
  return {
    name: 'duplicates, every run that hands out items',
    value: integer(total),
    target: '0',
    verdict: checked.length === 0 ? 'not measured' : total === 0 ? 'pass' : 'FAIL',
    detail: bad.length ? `in ${bad.join(', ')}` : `${checked.length} runs checked`,
  };
}

export function picksFor(options: BenchOptions): Picks {
  return {
    clients: options.clients.includes(50) ? 50 : (options.clients[0] as number),
    instances: Math.max(...options.instances),
    rawConnections: Math.max(...options.rawConnections),
    restoreBytes: options.restoreBytes,
    restoreRounds: options.restoreRounds,
  };
}

export function computeHeadlines(rows: MeasuredRow[], picks: Picks, restore: RestoreRun[]): Headline[] {
  const { clients: c, instances: n, rawConnections: raw } = picks;
  const pgHttp = dispatcher(rows, 'postgres', n, c);
  const sqliteHttp = dispatcher(rows, 'sqlite', 1, c);
  return [
    ratio(
      `PostgreSQL /allocate, ${n} instances, ${c} clients ÷ raw one-item claim, ${raw} connections`,
      pgHttp,
      bySuite(rows, 'raw-claim', raw, 'postgres', 'one-item claim SQL'),
      TARGETS.overRawClaim,
    ),
    ratio(`SQLite /allocate, ${c} clients ÷ Fastify hello world, ${c} clients`, sqliteHttp, bySuite(rows, 'fastify', c), TARGETS.overFastify),
    ratio(`PostgreSQL /allocate, ${n} instances, ${c} clients ÷ pg-boss, ${c} loops`, pgHttp, bestQueue(rows, 'pg-boss', c), TARGETS.overPgBoss),
    p99Bound(rows, c),
    noDuplicates(rows),
    ...restoreHeadlines(restore, picks.restoreBytes, picks.restoreRounds),
    ratio(`SQLite /allocate, ${c} clients ÷ raw one-item claim on SQLite`, sqliteHttp, bySuite(rows, 'raw-claim', 1, 'sqlite', 'one-item claim SQL')),
    ratio(`PostgreSQL /allocate, ${n} instances, ${c} clients ÷ Fastify hello world, ${c} clients`, pgHttp, bySuite(rows, 'fastify', c)),
    ratio(`PostgreSQL /allocate, 1 instance, ${c} clients ÷ pg-boss, ${c} loops`, dispatcher(rows, 'postgres', 1, c), bestQueue(rows, 'pg-boss', c)),
    ratio(`PostgreSQL /allocate, ${n} instances, ${c} clients ÷ graphile-worker, concurrency ${c}`, pgHttp, bestQueue(rows, 'graphile-worker', c)),
    ratio(
      `allocateBatch without HTTP ÷ raw one-item claim, PostgreSQL, ${raw} connections each`,
      bySuite(rows, 'raw-claim', raw, 'postgres', 'allocateBatch, no HTTP'),
      bySuite(rows, 'raw-claim', raw, 'postgres', 'one-item claim SQL'),
    ),
  ];
}

export function formatHeadlines(headlines: Headline[]): string {
  return (
    table(
      ['headline', 'value', 'target', 'verdict'],
      headlines.map((h) => [h.name, h.value, h.target, h.verdict]),
    ) +
    '\n\n' +
    headlines.map((h) => `  ${h.name}: ${h.detail}`).join('\n')
  );
}

export interface MarkdownInput {
  machine: Machine;
  options: BenchOptions;
  rows: MeasuredRow[];
  imports: Partial<Record<DatabaseKind, ImportResult>>;
  headlines: Headline[];
  restore: RestoreRun[];
  totalSeconds: number;
  command: string;
}

function conditions(input: MarkdownInput): string[] {
  const { machine, options, totalSeconds, command, rows, restore } = input;
  return [
    `- Command: \`${command}\` (whole run ${Math.round(totalSeconds / 60)} min)`,
    `- Suites: ${options.suites.join(', ')}; databases: ${options.databases.join(', ')}`,
    ...(rows.length > 0 ? allocationConditions(input) : []),
    ...restoreConditions(options, restore),
    `- Load generator, servers, queue libraries and PostgreSQL all shared the same ${machine.cores} cores; see the CPU columns for who used what and \`other CPU %\` for outside disturbance`,
    ...(rows.length > 0 ? [`- ${disturbance(rows)}`] : []),
    ...(restore.length > 0 ? [`- ${restoreDisturbance(restore)}`] : []),
  ];
}

function allocationConditions({ options, imports }: MarkdownInput): string[] {
  const imported = Object.entries(imports)
    .map(([kind, result]) => `${kind} ${integer(result.assetsPerSecond)} assets/s`)
    .join(', ');
  return [
    `- Assets: ${integer(options.assets)} imported once per database through \`importAssets\`${imported ? ` (${imported})` : ''}, replicas_target 1; state reset (allocations deleted, holders restored${options.databases.includes('postgres') ? ', VACUUM ANALYZE on PostgreSQL' : ''}) after every run`,
    `- Each run: ${options.warmupSeconds} s warm-up, then ${options.durationSeconds} s measured; closed loops (each waits for its answer before the next call)`,
    `- HTTP clients: ${options.clients.join(', ')} (undici, one keep-alive connection each), \`max_assets\` ${options.maxAssets}; PostgreSQL instances: ${options.instances.join(', ')}, clients round-robin over them, each with its default pool of 10 connections`,
    `- raw-claim: PostgreSQL ${options.rawConnections.join(', ')} connections (allocateBatch: the same numbers of loops, pool = loops); SQLite one connection (allocateBatch: the same loops sharing it)`,
    `- pg-boss / graphile-worker: ${options.queueLoops.join(', ')} loops / concurrency, a fresh schema per run, pool = loops + 2 up to ${options.queuePool}; backlogs: ${options.queueBacklogs.map((backlog) => (backlog === 'deep' ? `deep (${integer(options.queueJobs)} enqueued beforehand)` : `shallow (${integer(options.queueShallow)}–${integer(2 * options.queueShallow)} pending, topped up every 50 ms by the bench process)`)).join(', ')}; the headline takes each library's better backlog`,
  ];
}

/** Runs where other programs used more than a fifth of a core: their figures understate what the machine can do. */
const DISTURBED_PERCENT = 20;

export function disturbance(rows: MeasuredRow[]): string {
  const disturbed = rows.filter((row) => otherCpu(row) > DISTURBED_PERCENT);
  if (disturbed.length === 0) return `Undisturbed: other programs used at most ${DISTURBED_PERCENT} % of a core in every run.`;
  const worst = Math.max(...disturbed.map(otherCpu));
  return `DISTURBED: other programs used more than ${DISTURBED_PERCENT} % of a core in ${disturbed.length} of ${rows.length} runs (up to ${worst.toFixed(0)} %); these figures understate the machine.`;
}

export function formatMarkdown(input: MarkdownInput): string {
  const { machine, rows, headlines, restore } = input;
  const errors = errorLines(rows);
  return [
    '# Dispatcher benchmark results',
    '',
    `Written by \`npm run bench\` (bench/run.ts); see bench/README.md for what each suite and column means.`,
    '',
    '```',
    formatMachine(machine),
    '```',
    '',
    '## Conditions',
    '',
    ...conditions(input),
    '',
    '## Headline',
    '',
    'Ratios compare calls that did their job per second (an /allocate answered 200, a claim that got a row, a job fetched and completed); the items/s ratio is beside them in the detail. The restore ratio compares median MiB/s of whole, checked downloads.',
    '',
    markdownTable(
      ['headline', 'value', 'target', 'verdict', 'from'],
      headlines.map((h) => [h.name, h.value, h.target, h.verdict, h.detail]),
      1,
    ),
    '',
    ...(rows.length > 0
      ? [
          '## All runs',
          '',
          markdownTable(MAIN_HEADERS, rows.map(mainCells), 3),
          '',
          `CPU is a share of one core (100 = one core busy; ${machine.cores} cores).`,
          '',
          markdownTable(DETAIL_HEADERS, rows.map(detailCells), 2),
          ...(errors.length ? ['', '## Errors by status', '', '```', ...errors, '```'] : []),
          '',
        ]
      : []),
    ...restoreMarkdown(restore),
  ].join('\n');
}
