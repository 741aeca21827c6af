import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ImportResult } from './dataset.js';
import type { LoadResult } from './load.js';
import type { DatabaseKind } from './options.js';
import type { Verification } from './verify.js';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGb: number;
  kernel: string;
  node: string;
  date: string;
  /** The commit measured, with "-dirty" when src/ had uncommitted changes. */
  commit: string;
  postgres?: Record<string, string>;
}

/** One line of the table: one database at one client count. */
export interface RunRow {
  database: DatabaseKind;
  import: ImportResult;
  load: LoadResult;
  serverPeakRssMb: number;
  verification: Verification;
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

const integer = (value: number) => Math.round(value).toLocaleString('en-US');
const decimal = (value: number) => value.toFixed(value < 10 ? 2 : 1);

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) => cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join('  ');
  return [line(headers), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

/** Machine CPU not explained by the server, the load generator or PostgreSQL: other processes competing. */
function otherCpu(row: RunRow): number {
  const { machinePercent, serverPercent, loadGeneratorPercent, postgresPercent } = row.load.cpu;
  return Math.max(0, machinePercent - serverPercent - loadGeneratorPercent - (row.database === 'postgres' ? postgresPercent : 0));
}

function lastWholeSecond(load: LoadResult): number {
  const seconds = load.requestsPerSecondOverTime;
  const whole = Number.isInteger(load.durationSeconds) ? seconds.length : seconds.length - 1;
  return seconds[Math.max(0, whole - 1)] ?? 0;
}

export function formatResults(rows: RunRow[]): string {
  const main = table(
    ['database', 'assets', 'import assets/s', 'clients', 'req/s', 'allocations/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 'server peak RSS MB', 'duplicates'],
    rows.map((row) => [
      row.database,
      integer(row.import.assets),
      integer(row.import.assetsPerSecond),
      String(row.load.clients),
      integer(row.load.requestsPerSecond),
      integer(row.load.allocationsPerSecond),
      decimal(row.load.latencyMs.p50),
      decimal(row.load.latencyMs.p99),
      decimal(row.load.latencyMs.max),
      integer(row.load.errors),
      integer(row.serverPeakRssMb),
      integer(row.verification.duplicates),
    ]),
  );
  const cpu = table(
    ['database', 'clients', 'server CPU %', 'load gen CPU %', 'postgres CPU %', 'other CPU %', 'requests', 'req/s 1st s', 'req/s last s', 'p90 ms', 'mean ms', 'holders mismatch', 'granted = active rows'],
    rows.map((row) => [
      row.database,
      String(row.load.clients),
      row.load.cpu.serverPercent.toFixed(0),
      row.load.cpu.loadGeneratorPercent.toFixed(0),
      row.database === 'postgres' ? row.load.cpu.postgresPercent.toFixed(0) : '-',
      otherCpu(row).toFixed(0),
      integer(row.load.requests),
      integer(row.load.requestsPerSecondOverTime[0] ?? 0),
      integer(lastWholeSecond(row.load)),
      decimal(row.load.latencyMs.p90),
      decimal(row.load.latencyMs.mean),
      integer(row.verification.holdersMismatch),
      row.load.grantedTotal === row.verification.activeAllocations ? 'yes' : `no (${row.load.grantedTotal} vs ${row.verification.activeAllocations})`,
    ]),
  );
  const errors = rows
    .filter((row) => row.load.errors > 0)
    .map((row) => {
      const byStatus = Object.entries(row.load.statuses).filter(([status]) => status !== '200');
      const samples = Object.entries(row.load.errorSamples).map(([status, body]) => `    ${status}: ${body}`);
      return [`  ${row.database} ×${row.load.clients}: ${byStatus.map(([status, n]) => `${status}=${n}`).join(', ')}`, ...samples].join('\n');
    });
  return [main, '', 'CPU is a share of one core (100 = one core busy; the machine has ' + os.availableParallelism() + ' cores).', cpu, ...(errors.length ? ['', 'Errors by status:', ...errors] : [])].join('\n');
}

export function formatMachine(machine: Machine): string {
  const pg = machine.postgres
    ? `\nPostgreSQL ${machine.postgres.server_version} (shared_buffers ${machine.postgres.shared_buffers} × 8kB, synchronous_commit ${machine.postgres.synchronous_commit}, fsync ${machine.postgres.fsync})`
    : '';
  return `Machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGb} GB RAM, Linux ${machine.kernel}, Node ${machine.node}\nDate: ${machine.date}  commit ${machine.commit}${pg}`;
}

/** Writes bench/out/<timestamp>.json and returns its path. */
export function writeJson(outDirectory: string, payload: unknown, date: string): string {
  fs.mkdirSync(outDirectory, { recursive: true });
  const file = path.join(outDirectory, `${date.replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(payload, null, 2)}\n`);
  return file;
}
