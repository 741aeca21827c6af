import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MeasuredRow } from './rows.js';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGb: number;
  kernel: string;
  node: string;
  date: string;
  /** The commit measured, with "-dirty" when src/ had uncommitted changes. */
  commit: string;
  /** Versions of the libraries measured or measured against, as installed. */
  libraries: Record<string, string>;
  postgres?: Record<string, string>;
}

const LIBRARIES = ['fastify', 'kysely', 'pg', 'better-sqlite3', 'undici', 'pg-boss', 'graphile-worker'];

/** Read from node_modules directly: some packages (kysely) do not export their package.json. */
function installedVersions(projectRoot: string): Record<string, string> {
  return Object.fromEntries(
    LIBRARIES.map((name) => {
      try {
        const manifest = fs.readFileSync(path.join(projectRoot, 'node_modules', name, 'package.json'), 'utf8');
        return [name, (JSON.parse(manifest) as { version: string }).version];
      } catch {
        return [name, 'not installed'];
      }
    }),
  );
}

export function describeMachine(projectRoot: string): Machine {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const cpuModel = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    cpuModel,
    cores: os.availableParallelism(),
    memoryGb: Math.round(os.totalmem() / 1024 ** 3),
    kernel: os.release(),
    node: process.version,
    date: new Date().toISOString(),
    commit: gitCommit(projectRoot),
    libraries: installedVersions(projectRoot),
  };
}

function gitCommit(projectRoot: string): string {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: projectRoot, encoding: 'utf8' }).trim();
    const dirty = git('status', '--porcelain', '--', 'src') !== '';
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? '-dirty' : ''}`;
  } catch {
    return 'unknown';
  }
}

export const integer = (value: number) => Math.round(value).toLocaleString('en-US');
export const decimal = (value: number) => value.toFixed(value < 10 ? 2 : 1);

/** Plain-text table: first column left-aligned, the others right-aligned. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join('  ');
  return [line(headers), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

/** Markdown table: the first `leftColumns` columns left-aligned, the others (figures) right-aligned. */
export function markdownTable(headers: string[], rows: string[][], leftColumns: number): string {
  const line = (cells: string[]) => `| ${cells.map((cell) => cell.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(headers), `|${headers.map((_, column) => (column < leftColumns ? '---' : '---:')).join('|')}|`, ...rows.map(line)].join('\n');
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return 0;
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

interface CpuReading {
  machinePercent: number;
  serverPercent: number;
  loadGeneratorPercent: number;
  postgresPercent: number;
}

/** Machine CPU not explained by the processes measured (PostgreSQL's only when it is one of them): other processes competing. */
export function unexplainedCpu(cpu: CpuReading, postgresMeasured: boolean): number {
  return Math.max(0, cpu.machinePercent - cpu.serverPercent - cpu.loadGeneratorPercent - (postgresMeasured ? cpu.postgresPercent : 0));
}

/** Machine CPU not explained by the servers, the load generator or PostgreSQL: other processes competing. */
export function otherCpu(row: MeasuredRow): number {
  return unexplainedCpu(row.result.cpu, row.database === 'postgres');
}

function lastWholeSecond(row: MeasuredRow): number {
  const seconds = row.result.callsPerSecondOverTime;
  const whole = Number.isInteger(row.result.durationSeconds) ? seconds.length : seconds.length - 1;
  return seconds[Math.max(0, whole - 1)] ?? 0;
}

/** "142" for one server, "142+140+139 = 421" for three. */
function rssCell(row: MeasuredRow): string {
  const rss = row.serverRssMb;
  if (!rss || rss.length === 0) return '-';
  const total = integer(rss.reduce((sum, value) => sum + value, 0));
  return rss.length === 1 ? total : `${rss.map(integer).join('+')} = ${total}`;
}

const optional = (value: number | undefined, format: (value: number) => string) => (value === undefined ? '-' : format(value));

export const MAIN_HEADERS = [
  'suite',
  'what',
  'db',
  'inst',
  'conc',
  'conns',
  'calls/s',
  'items/s',
  'p50 ms',
  'p99 ms',
  'max ms',
  'errors',
  'server RSS MB',
  'duplicates',
];

export function mainCells(row: MeasuredRow): string[] {
  const latency = row.result.latencyMs;
  return [
    row.suite,
    row.subject,
    row.database ?? '-',
    optional(row.instances, String),
    String(row.result.concurrency),
    row.connections,
    integer(row.result.okPerSecond),
    row.suite === 'fastify' ? '-' : integer(row.result.itemsPerSecond),
    optional(latency?.p50, decimal),
    optional(latency?.p99, decimal),
    optional(latency?.max, decimal),
    integer(row.result.errors),
    rssCell(row),
    optional(row.check.duplicates, integer),
  ];
}

export const DETAIL_HEADERS = [
  'suite',
  'db',
  'inst',
  'conc',
  'server CPU %',
  'load gen CPU %',
  'postgres CPU %',
  'other CPU %',
  'calls',
  'calls 1st s',
  'calls last s',
  'p90 ms',
  'mean ms',
  'holders mismatch',
  'handed out = stored',
];

export function detailCells(row: MeasuredRow): string[] {
  const { cpu, latencyMs } = row.result;
  const { handedOut, stored } = row.check;
  return [
    row.suite,
    row.database ?? '-',
    optional(row.instances, String),
    String(row.result.concurrency),
    row.serverRssMb ? cpu.serverPercent.toFixed(0) : '-',
    cpu.loadGeneratorPercent.toFixed(0),
    row.database === 'postgres' ? cpu.postgresPercent.toFixed(0) : '-',
    otherCpu(row).toFixed(0),
    integer(row.result.calls),
    integer(row.result.callsPerSecondOverTime[0] ?? 0),
    integer(lastWholeSecond(row)),
    optional(latencyMs?.p90, decimal),
    optional(latencyMs?.mean, decimal),
    optional(row.check.holdersMismatch, integer),
    handedOut === undefined || stored === undefined ? '-' : handedOut === stored ? 'yes' : `no (${handedOut} vs ${stored})`,
  ];
}

/** Each failing row's statuses and one sample body per status. */
export function errorLines(rows: MeasuredRow[]): string[] {
  return rows
    .filter((row) => row.result.errors > 0)
    .map((row) => {
      const byStatus = Object.entries(row.result.statuses).filter(([status]) => status !== '200' && status !== 'ok');
      const samples = Object.entries(row.result.errorSamples).map(([status, body]) => `    ${status}: ${body}`);
      const name = `${row.suite} ${row.database ?? ''} ×${row.result.concurrency}${row.instances ? ` on ${row.instances} instance(s)` : ''}`;
      return [`  ${name}: ${byStatus.map(([status, n]) => `${status}=${n}`).join(', ')}`, ...samples].join('\n');
    });
}

export function formatResults(rows: MeasuredRow[]): string {
  const errors = errorLines(rows);
  return [
    table(MAIN_HEADERS, rows.map(mainCells)),
    '',
    `CPU is a share of one core (100 = one core busy; the machine has ${os.availableParallelism()} cores).`,
    table(DETAIL_HEADERS, rows.map(detailCells)),
    ...(errors.length ? ['', 'Errors by status:', ...errors] : []),
  ].join('\n');
}

export function formatMachine(machine: Machine): string {
  const pg = machine.postgres
    ? `\nPostgreSQL ${machine.postgres.server_version} (shared_buffers ${machine.postgres.shared_buffers} × 8kB, synchronous_commit ${machine.postgres.synchronous_commit}, fsync ${machine.postgres.fsync}, max_connections ${machine.postgres.max_connections})`
    : '';
  const libraries = Object.entries(machine.libraries)
    .map(([name, version]) => `${name} ${version}`)
    .join(', ');
  return `Machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGb} GB RAM, Linux ${machine.kernel}, Node ${machine.node}\nDate: ${machine.date}  commit ${machine.commit}${pg}\nLibraries: ${libraries}`;
}

/** Writes bench/out/<timestamp>.json and returns its path. */
export function writeJson(outDirectory: string, payload: unknown, date: string): string {
  fs.mkdirSync(outDirectory, { recursive: true });
  const file = path.join(outDirectory, `${date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(payload, null, 2)}\n`);
  return file;
}
