import fs from 'node:fs';

/** Linux clock ticks per second (`getconf CLK_TCK`); 100 on every mainstream x86/arm kernel. */
const CLOCK_TICKS = 100;

/** A value of /proc/<pid>/status in MiB (VmRSS, VmHWM), or undefined once the process is gone. */
export function readMemoryMb(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** User + system CPU seconds a process has used so far (0 once it is gone). */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces, so fields are counted from the closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

// PostgreSQL's shared helpers: they work for every database, so their CPU is charged to the bench.
const POSTGRES_HELPERS = /: (walwriter|checkpointer|background writer|autovacuum|wal writer)/;

/**
 * CPU seconds of the PostgreSQL processes serving `database` (backends name their database in
 * their title) plus the shared helpers. Other sessions' backends are left out, so tests running
 * beside the bench do not count as its PostgreSQL load.
 */
export function postgresCpuSeconds(database: string): number {
  let total = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const title = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!title.startsWith('postgres:')) continue;
      if (title.includes(` ${database} `) || POSTGRES_HELPERS.test(title)) total += processCpuSeconds(Number(entry));
    } catch {
      // The process ended between readdir and read.
    }
  }
  return total;
}

/** Busy and total CPU seconds of the whole machine, summed over cores (first line of /proc/stat). */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((sum, value) => sum + value, 0);
  // idle and iowait are the 4th and 5th columns.
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
}

/**
 * CPU use over a window, as a share of one core (100 % = one core busy): the server(s), this
 * process (the load generator, and the work itself for in-process suites), the bench database's
 * PostgreSQL processes, and the whole machine.
 */
export interface CpuUsage {
  serverPercent: number;
  loadGeneratorPercent: number;
  postgresPercent: number;
  machinePercent: number;
}

/** `serverPids` may be empty (work done in this process) or several server instances, summed. */
export function startCpuWindow(serverPids: number[], postgresDatabase: string | undefined): () => CpuUsage {
  const postgresNow = () => (postgresDatabase ? postgresCpuSeconds(postgresDatabase) : 0);
  const serversNow = () => serverPids.reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
  const started = process.hrtime.bigint();
  const server = serversNow();
  const self = process.cpuUsage();
  const postgres = postgresNow();
  const machine = machineCpuSeconds();
  return () => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const selfUsed = process.cpuUsage(self);
    const machineNow = machineCpuSeconds();
    const percent = (cpuSeconds: number) => Math.round((cpuSeconds / seconds) * 1000) / 10;
    return {
      serverPercent: percent(serversNow() - server),
      loadGeneratorPercent: percent((selfUsed.user + selfUsed.system) / 1e6),
      postgresPercent: percent(postgresNow() - postgres),
      machinePercent: percent(machineNow.busy - machine.busy),
    };
  };
}
