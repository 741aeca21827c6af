import type { BenchOptions } from './options.js';
import { auditFigures, completionRatio, kb, msPer, otherCpu } from './proofs-figures.js';
import { AUDIT_MIN_SECONDS, DEFAULT_AUDITS_PER_MINUTE, type AuditLoadRun } from './proofs-load.js';
import type { AnswerRun, PrepareRun } from './proofs-prepare.js';
import type { CompletionRound } from './proofs-spot.js';
import type { ProofsRun } from './proofs.js';
import { decimal, integer, markdownTable, median, table } from './report.js';

const ROUND_HEADERS = [
  'db',
  'round',
  'VERIFY_SPOT_CHECKS',
  'completions/s',
  'p50 ms',
  'p99 ms',
  'errors',
  'server CPU %',
  'server CPU ms each',
  'postgres CPU %',
  'load gen CPU %',
  'other CPU %',
  'spot checks queued',
  'server RSS MB',
];

function roundCells(database: string, round: CompletionRound): string[] {
  const { result } = round;
  return [
    database,
    String(round.round),
    String(round.spotChecks),
    integer(result.okPerSecond),
    decimal(result.latencyMs?.p50 ?? 0),
    decimal(result.latencyMs?.p99 ?? 0),
    integer(result.errors),
    result.cpu.serverPercent.toFixed(0),
    decimal(msPer(result.cpu.serverPercent, 1, result.okPerSecond)),
    database === 'postgres' ? result.cpu.postgresPercent.toFixed(0) : '-',
    result.cpu.loadGeneratorPercent.toFixed(0),
    otherCpu(result.cpu).toFixed(0),
    integer(round.spotChecksQueued),
    integer(round.serverRssMb),
  ];
}

const PASS_HEADERS = [
  'db',
  'what',
  'per s',
  'count',
  'seconds',
  'control plane CPU ms each',
  'postgres CPU ms each',
  'other side CPU ms each',
  'other CPU %',
  'note',
];

function prepareCells(database: string, run: PrepareRun): string[] {
  return [
    database,
    'spot checks prepared (runProofs, in the bench process)',
    integer(run.perSecond),
    integer(run.prepared),
    run.seconds.toFixed(1),
    decimal(msPer(run.cpu.loadGeneratorPercent, run.seconds, run.prepared)),
    database === 'postgres' ? decimal(msPer(run.cpu.postgresPercent, run.seconds, run.prepared)) : '-',
    `${decimal(msPer(run.cpu.serverPercent, run.seconds, run.prepared))} (file server)`,
    otherCpu(run.cpu).toFixed(0),
    `${integer(run.rangeReads / run.seconds)} ranges/s, ${decimal(run.bytesRead / run.seconds / 1e6)} MB/s read; cancelled ${run.cancelled}${run.drained ? '; queue drained' : ''}`,
  ];
}

function answerCells(database: string, run: AnswerRun): string[] {
  const { holders } = run;
  return [
    database,
    'spot checks answered + judged (POST /api/audits/{id})',
    integer(run.perSecond),
    integer(run.answered),
    run.seconds.toFixed(1),
    decimal(msPer(run.cpu.serverPercent, run.cpuSeconds, run.answered)),
    database === 'postgres' ? decimal(msPer(run.cpu.postgresPercent, run.cpuSeconds, run.answered)) : '-',
    `${decimal(msPer(run.cpu.loadGeneratorPercent, run.cpuSeconds, run.answered))} (holders)`,
    otherCpu(run.cpu).toFixed(0),
    `passed ${holders.passed}, failed ${holders.failed}, of ${run.open} open${run.drained ? ' (all answered)' : ''}; ${holders.heartbeats} heartbeats; counted after: ${run.counted}`,
  ];
}

const LOAD_HEADERS = [
  'db',
  'copies',
  'started/s',
  'answered/s',
  'judged/s',
  'needed/s',
  'headroom',
  'server CPU ms/audit',
  'postgres CPU ms/audit',
  'holders CPU ms/audit',
  'other CPU %',
  'bytes/audit',
  'GB/week',
  'passes',
  'pass ms p50/max',
];

function loadCells(run: AuditLoadRun): string[] {
  const figures = auditFigures(run);
  return [
    run.database,
    integer(run.copies),
    decimal(run.started / run.seconds),
    decimal(run.answered / run.seconds),
    decimal(figures.judgedPerSecond),
    decimal(figures.required),
    `${figures.headroom.toFixed(0)}×`,
    decimal(figures.serverMs),
    run.database === 'postgres' ? decimal(figures.postgresMs) : '-',
    decimal(figures.holdersMs),
    otherCpu(run.cpu).toFixed(0),
    run.holderTotals.answered > 0 ? integer(figures.bytes.audit) : '-',
    run.holderTotals.answered > 0 ? decimal(figures.perWeekGb) : '-',
    String(run.passes),
    run.passMs.length > 0 ? `${integer(median(run.passMs))}/${integer(Math.max(...run.passMs))}` : '-',
  ];
}

function notes(runs: ProofsRun[]): string[] {
  return runs.flatMap(({ database, spotChecks, auditLoad }) => {
    const ratio = completionRatio(spotChecks);
    const figures = auditFigures(auditLoad);
    const { bytes } = figures;
    return [
      `${database}: /complete VERIFY_SPOT_CHECKS=3 ÷ =0 = ${ratio.ratio.toFixed(2)}× (medians ${integer(ratio.withChecks)} ÷ ${integer(ratio.without)} completions/s).`,
      `${database}: audits judged ${decimal(figures.judgedPerSecond)}/s against ${decimal(figures.required)}/s needed = ${figures.headroom.toFixed(0)}× headroom; the default AUDITS_PER_MINUTE ${DEFAULT_AUDITS_PER_MINUTE} caps starts at ${DEFAULT_AUDITS_PER_MINUTE / 60}/s = ${figures.defaultCapHeadroom.toFixed(1)}× the need. ` +
        (auditLoad.holderTotals.answered > 0
          ? `Per audit: answer request ${kb(bytes.request)} kB + response ${kb(bytes.response)} kB + its item in a heartbeat answer ${kb(bytes.item)} kB = ${kb(bytes.audit)} kB (${decimal(figures.perWeekGb)} GB/week at ${integer(auditLoad.copies)} copies); `
          : 'No answer was judged, so no bytes per audit; ') +
        `heartbeats that fetched them ${kb(bytes.heartbeat)} kB per audit (an agent heartbeats every 60 s anyway). Verdicts stamped in the window ${JSON.stringify(auditLoad.verdicts)}; audits under way ${auditLoad.inFlight.from} → ${auditLoad.inFlight.to} (judged = under way at the start + started − under way at the end); counted copies ${integer(auditLoad.countedBefore)} → ${integer(auditLoad.countedAfter)}; ` +
        `prove-copies passes (start in s from the window's start: ms) ${auditLoad.passLog.map((pass) => `${pass.atSeconds}: ${integer(pass.ms)}`).join(', ')}; ` +
        `answers per second over the window: ${auditLoad.answersPerSecondOverTime.join(' ')}.`,
    ];
  });
}

export function formatProofs(runs: ProofsRun[], options: BenchOptions): string {
  return [
    'Proofs conditions:',
    ...conditions(runs, options),
    '',
    'Proofs: /complete rounds (CPU is a share of one core; "ms each" = CPU milliseconds per completion)',
    table(
      ROUND_HEADERS,
      runs.flatMap((run) => run.spotChecks.rounds.map((round) => roundCells(run.database, round))),
    ),
    '',
    table(
      PASS_HEADERS,
      runs.flatMap((run) => [prepareCells(run.database, run.spotChecks.prepare), answerCells(run.database, run.spotChecks.answer)]),
    ),
    '',
    `Audit load (block audits end to end, AUDITS_PER_MINUTE ${runs[0]?.auditLoad.auditsPerMinute})`,
    table(
      LOAD_HEADERS,
      runs.map((run) => loadCells(run.auditLoad)),
    ),
    '',
    ...notes(runs),
  ].join('\n');
}

function conditions(runs: ProofsRun[], options: BenchOptions): string[] {
  const first = runs[0];
  if (!first) return [];
  const load = first.auditLoad;
  return [
    `- /complete: ${first.spotChecks.clients} closed-loop clients (one node each, one keep-alive connection), ${options.proofRounds} rounds of each setting alternated (0, 3, 0, 3, …), each on a fresh copy of the same seeded database (${integer(first.spotChecks.seededAllocations)} active allocations, 1 per asset) and a freshly started \`node dist/cli.js serve\`; ${options.warmupSeconds} s warm-up, ${options.durationSeconds} s measured. Both servers: the bench defaults of bench/server.ts, SOURCE_ALLOW_PRIVATE_NETWORKS=true, everything else at its default (AUDITS_PER_MINUTE ${DEFAULT_AUDITS_PER_MINUTE}: the =3 server's own pass prepares up to 100 spot checks per 10 s during its rounds, counted in its CPU); nodes vetted`,
    `- Spot checks prepared: \`runProofs\` back to back in the bench process on the last =3 round's database, AUDITS_PER_MINUTE ${first.spotChecks.prepare.auditsPerMinute} with a ${first.spotChecks.prepare.passMs} ms pass (1,000 per pass: the cap does not bind), 3 ranges of 64 KiB per check from bench/file-server.ts over loopback; ${options.warmupSeconds} s warm-up, up to ${options.durationSeconds} s measured. Answered: the same nodes heartbeat and POST sha256(nonce ‖ range) of each, through a server with VERIFY_SPOT_CHECKS=3, until none is left or ${options.durationSeconds} s`,
    `- Audit load: ${integer(load.copies)} counted copies seeded by INSERT … SELECT (assets rescued with the agreed Merkle root, completed allocations proof proven, verified 1, next audit due within the last ${load.intervalHours / 2} h) on ${load.holders} nodes registered through the API, ${load.historyAudits} passed audits per copy on record (the ${load.historyAudits} intervals of the 30-day score window); copy shapes of ${load.shapes.map((shape) => `${integer(shape.size)} B (path ${shape.depth})`).join(', ')}. The server's own prove-copies pass (every 10 s) with AUDITS_PER_MINUTE ${load.auditsPerMinute}, high on purpose (${integer(load.auditsPerMinute / 60)}/s, ${load.auditsPerMinute / DEFAULT_AUDITS_PER_MINUTE}× the default: a pass may fill all ${load.holders} nodes' 8 audits under way, so at most ${integer((load.holders * 8) / 10)}/s can start), AUDIT_INTERVAL_HOURS ${load.intervalHours}; nodes online from the start; holders heartbeat, answer each listed block audit with the block and its Merkle path, heartbeat again at once (after 10 s, the pass's interval, when nothing was listed; an agent heartbeats every 60 s); the window opens ${options.warmupSeconds} s after the server's first pass finished and lasts ${load.seconds.toFixed(0)} s (at least ${AUDIT_MIN_SECONDS} s: three passes); "started" counts audits inserted in the window`,
    '- "other CPU %" is the machine minus the processes measured: other work on the same cores (tests run by other engineers) shows there',
  ];
}

/** The Markdown section appended to the report. */
export function proofsMarkdown(runs: ProofsRun[], options: BenchOptions): string {
  if (runs.length === 0) return '';
  return [
    '',
    '## Proofs',
    '',
    ...conditions(runs, options),
    '',
    markdownTable(
      ROUND_HEADERS,
      runs.flatMap((run) => run.spotChecks.rounds.map((round) => roundCells(run.database, round))),
      1,
    ),
    '',
    markdownTable(
      PASS_HEADERS,
      runs.flatMap((run) => [prepareCells(run.database, run.spotChecks.prepare), answerCells(run.database, run.spotChecks.answer)]),
      2,
    ),
    '',
    markdownTable(
      LOAD_HEADERS,
      runs.map((run) => loadCells(run.auditLoad)),
      1,
    ),
    '',
    ...notes(runs).map((line) => `- ${line}`),
    '',
  ].join('\n');
}
