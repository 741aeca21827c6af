import type { Headline } from './headline.js';
import type { BenchOptions } from './options.js';
import { decimal, integer, markdownTable, median, table } from './report.js';
import type { RestorePath, RestoreRound } from './restore-round.js';
import type { RestoreRun } from './restore.js';

/** The issue's targets for a restore: relayed throughput against a direct download, and the control plane's memory. */
const TARGETS = { relayedOverDirect: 0.8, serverRssMb: 200 };
/** Rounds where other programs used more than a fifth of a core understate the machine. */
const DISTURBED_PERCENT = 20;

interface Spread {
  min: number;
  median: number;
  max: number;
  rounds: number;
  failed: number;
}

function spreadOf(rounds: RestoreRound[], pick: (round: RestoreRound) => number): Spread {
  const values = rounds.map(pick);
  return {
    min: values.length ? Math.min(...values) : 0,
    median: median(values),
    max: values.length ? Math.max(...values) : 0,
    rounds: rounds.length,
    failed: rounds.filter((round) => !round.sha256Ok).length,
  };
}

const roundsOf = (run: RestoreRun, path: RestorePath) => run.rounds.filter((round) => round.path === path);
const throughput = (run: RestoreRun, path: RestorePath) => spreadOf(roundsOf(run, path), (round) => round.mibPerSecond);
/** The highest VmRSS sampled during the relayed rounds. */
const relayedRssPeak = (run: RestoreRun) => Math.max(0, ...roundsOf(run, 'relayed').map((round) => round.serverRssMb));

/** "1 GiB", "256 MiB", or bytes. */
export function sizeLabel(bytes: number): string {
  if (bytes % 1024 ** 3 === 0) return `${bytes / 1024 ** 3} GiB`;
  if (bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2} MiB`;
  return `${integer(bytes)} bytes`;
}

function spreadText(spread: Spread): string {
  const failed = spread.failed ? `, ${spread.failed} failed` : '';
  return `${integer(spread.median)} MiB/s (min ${integer(spread.min)}, max ${integer(spread.max)}${failed})`;
}

/** Relayed ÷ direct on the medians, the worst database deciding; and the control plane's RSS peak, the highest deciding. */
export function restoreHeadlines(runs: RestoreRun[], bytes: number, rounds: number): Headline[] {
  const ratioName = `restore: relayed ÷ direct download, ${sizeLabel(bytes)} on loopback, medians of ${rounds} rounds`;
  const rssName = `restore: control plane peak RSS during the relayed rounds`;
  const ratioTarget = `≥ ${TARGETS.relayedOverDirect}×`;
  const rssTarget = `< ${TARGETS.serverRssMb} MB`;
  if (runs.length === 0) {
    const detail = 'the restore suite was not part of this run';
    return [
      { name: ratioName, value: '-', target: ratioTarget, verdict: 'not measured', detail },
      { name: rssName, value: '-', target: rssTarget, verdict: 'not measured', detail },
    ];
  }
  const ratios = runs.map((run) => {
    const [relayed, direct] = [throughput(run, 'relayed'), throughput(run, 'direct')];
    return { run, relayed, direct, value: direct.median > 0 ? relayed.median / direct.median : 0 };
  });
  const worstRatio = ratios.reduce((a, b) => (b.value < a.value ? b : a));
  const peaks = runs.map((run) => ({ run, peak: relayedRssPeak(run) }));
  const worstRss = peaks.reduce((a, b) => (b.peak > a.peak ? b : a));
  return [
    {
      name: ratioName,
      value: `${worstRatio.value.toFixed(2)}×`,
      target: ratioTarget,
      verdict: worstRatio.value >= TARGETS.relayedOverDirect ? 'pass' : 'FAIL',
      detail: ratios
        .map(({ run, relayed, direct, value }) => `${run.database}: relayed ${spreadText(relayed)} ÷ direct ${spreadText(direct)} = ${value.toFixed(2)}×`)
        .join('; '),
    },
    {
      name: rssName,
      value: `${integer(worstRss.peak)} MB`,
      target: rssTarget,
      verdict: worstRss.peak < TARGETS.serverRssMb ? 'pass' : 'FAIL',
      detail: peaks
        .map(
          ({ run, peak }) =>
            `${run.database}: highest VmRSS read every 100 ms ${integer(peak)} MB (${integer(run.serverRssBeforeMb)} MB before the rounds), VmHWM over its life ${integer(run.serverHighWaterMb)} MB`,
        )
        .join('; '),
    },
  ];
}

function otherCpu(round: RestoreRound): number {
  const { machinePercent, serverPercent, agentPercent, fileServerPercent, clientPercent, postgresPercent } = round.cpu;
  return Math.max(0, machinePercent - serverPercent - agentPercent - fileServerPercent - clientPercent - postgresPercent);
}

const ROUND_HEADERS = [
  'db',
  'path',
  'round',
  'MiB/s',
  'seconds',
  'first byte ms',
  'MiB/s after 1st byte',
  'sha256',
  'server RSS MB',
  'agent RSS MB',
  'server CPU %',
  'agent CPU %',
  'file server CPU %',
  'client CPU %',
  'postgres CPU %',
  'other CPU %',
];

function roundCells(run: RestoreRun, round: RestoreRound): string[] {
  const { cpu } = round;
  return [
    run.database,
    round.path,
    String(round.round),
    integer(round.mibPerSecond),
    decimal(round.seconds),
    integer(round.firstByteMs),
    integer(round.streamMibPerSecond),
    round.sha256Ok ? 'ok' : `FAILED: ${round.error ?? ''}`,
    integer(round.serverRssMb),
    integer(round.agentRssMb),
    cpu.serverPercent.toFixed(0),
    cpu.agentPercent.toFixed(0),
    cpu.fileServerPercent.toFixed(0),
    cpu.clientPercent.toFixed(0),
    run.database === 'postgres' ? cpu.postgresPercent.toFixed(0) : '-',
    otherCpu(round).toFixed(0),
  ];
}

const SUMMARY_HEADERS = ['db', 'path', 'rounds', 'min MiB/s', 'median MiB/s', 'max MiB/s', 'median first byte ms', 'highest server RSS MB', 'server VmHWM MB'];

function summaryCells(run: RestoreRun, path: RestorePath): string[] {
  const rounds = roundsOf(run, path);
  const spread = throughput(run, path);
  return [
    run.database,
    path,
    `${spread.rounds}${spread.failed ? ` (${spread.failed} failed)` : ''}`,
    integer(spread.min),
    integer(spread.median),
    integer(spread.max),
    integer(spreadOf(rounds, (round) => round.firstByteMs).median),
    integer(Math.max(0, ...rounds.map((round) => round.serverRssMb))),
    path === 'relayed' ? integer(run.serverHighWaterMb) : '-',
  ];
}

const allRounds = (runs: RestoreRun[]) => runs.flatMap((run) => run.rounds.map((round) => roundCells(run, round)));
const summaries = (runs: RestoreRun[]) => runs.flatMap((run) => [summaryCells(run, 'direct'), summaryCells(run, 'relayed')]);

/** The restore tables as printed at the end of a run. */
export function formatRestore(runs: RestoreRun[]): string {
  return ['Restore, one row per round (CPU: 100 = one core busy):', table(ROUND_HEADERS, allRounds(runs)), '', table(SUMMARY_HEADERS, summaries(runs))].join(
    '\n',
  );
}

/** The "## Restore" section of the Markdown report. */
export function restoreMarkdown(runs: RestoreRun[]): string[] {
  if (runs.length === 0) return [];
  return [
    '## Restore',
    '',
    'One row per round, in the order run; MiB/s is the whole file over the wall time from the request to the last byte read and hashed; CPU is a share of one core.',
    '',
    markdownTable(ROUND_HEADERS, allRounds(runs), 3),
    '',
    markdownTable(SUMMARY_HEADERS, summaries(runs), 2),
    '',
  ];
}

/** The restore line of the Markdown report's conditions. */
export function restoreConditions(options: BenchOptions, runs: RestoreRun[]): string[] {
  if (runs.length === 0) return [];
  const downloads = runs.map((run) => `${run.database} ${run.agentDownloadSeconds.toFixed(1)} s`).join(', ');
  return [
    `- Restore: one ${sizeLabel(options.restoreBytes)} file of random bytes on local disk (page cache warm), served by \`bench/file-server.ts\` (plain \`node:http\`, 1 MiB reads piped); per database a fresh control plane (\`node dist/cli.js serve\`, default transfer settings) and one agent (\`node dist/cli.js agent\`, 1 s heartbeat, scrub off), which first downloaded and completed the file (${downloads}); then ${options.restoreRounds} rounds each of direct (from the file server) and relayed (\`GET /assets/{id}/content?prefer_source=false\` with a user token), alternated, the bench client reading and hashing the whole body (undici, one keep-alive connection per origin); RSS read every 100 ms`,
  ];
}

export function restoreDisturbance(runs: RestoreRun[]): string {
  const rounds = runs.flatMap((run) => run.rounds);
  const disturbed = rounds.filter((round) => otherCpu(round) > DISTURBED_PERCENT);
  if (disturbed.length === 0) return `Restore undisturbed: other programs used at most ${DISTURBED_PERCENT} % of a core in every round.`;
  const worst = Math.max(...disturbed.map(otherCpu));
  return `Restore DISTURBED: other programs used more than ${DISTURBED_PERCENT} % of a core in ${disturbed.length} of ${rounds.length} rounds (up to ${worst.toFixed(0)} %); these figures understate the machine.`;
}
