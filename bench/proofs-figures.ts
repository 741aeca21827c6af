import type { Headline } from './headline.js';
import { DEFAULT_AUDITS_PER_MINUTE, type AuditLoadRun } from './proofs-load.js';
import type { SpotCheckRun } from './proofs-spot.js';
import type { ProofsRun } from './proofs.js';
import { decimal, integer, median, unexplainedCpu } from './report.js';

/** The proofs suite's derived figures: ratios, rates per audit, bytes, and its headlines. */

/** CPU milliseconds per item, from a share of one core over `seconds`. */
export const msPer = (percent: number, seconds: number, items: number) => (items > 0 ? (percent * 10 * seconds) / items : 0);
/** The machine's CPU beyond every process the suite measures, PostgreSQL's included (0 on SQLite). */
export const otherCpu = (cpu: Parameters<typeof unexplainedCpu>[0]) => unexplainedCpu(cpu, true);
export const kb = (bytes: number) => (bytes / 1000).toFixed(1);

/** Median completions/s of each variant and their ratio: the suite's headline. */
export function completionRatio(run: SpotCheckRun): { without: number; withChecks: number; ratio: number } {
  const of = (spotChecks: number) => median(run.rounds.filter((round) => round.spotChecks === spotChecks).map((round) => round.result.okPerSecond));
  const [without, withChecks] = [of(0), of(3)];
  return { without, withChecks, ratio: without > 0 ? withChecks / without : 0 };
}

/** What the audit load's figures mean per audit and per week. */
export function auditFigures(run: AuditLoadRun) {
  const { holderTotals: totals } = run;
  const required = run.copies / (run.intervalHours * 3600);
  const judgedPerSecond = run.judged / run.seconds;
  const perAnswer = (bytes: number) => (totals.answered > 0 ? bytes / totals.answered : 0);
  const request = perAnswer(totals.answerWire.sent);
  const response = perAnswer(totals.answerWire.received);
  const item = totals.items > 0 ? totals.itemBytes / totals.items : 0;
  return {
    required,
    judgedPerSecond,
    headroom: required > 0 ? judgedPerSecond / required : 0,
    serverMs: msPer(run.cpu.serverPercent, run.seconds, run.judged),
    postgresMs: msPer(run.cpu.postgresPercent, run.seconds, run.judged),
    holdersMs: msPer(run.cpu.loadGeneratorPercent, run.seconds, run.judged),
    bytes: { request, response, item, heartbeat: perAnswer(totals.heartbeatWire.sent + totals.heartbeatWire.received), audit: request + response + item },
    perWeekGb: ((request + response + item) * run.copies * (168 / run.intervalHours)) / 1e9,
    defaultCapHeadroom: DEFAULT_AUDITS_PER_MINUTE / 60 / required,
  };
}

export function proofsHeadlines(runs: ProofsRun[]): Headline[] {
  return runs.flatMap((run) => {
    const ratio = completionRatio(run.spotChecks);
    const audits = auditFigures(run.auditLoad);
    return [
      {
        name: `${run.database}: /complete with VERIFY_SPOT_CHECKS=3 ÷ =0, ${run.spotChecks.clients} clients (medians of ${run.spotChecks.rounds.length / 2} rounds each)`,
        value: `${ratio.ratio.toFixed(2)}×`,
        target: '-',
        verdict: 'info',
        detail: `completions/s ${integer(ratio.withChecks)} ÷ ${integer(ratio.without)}`,
      },
      {
        name: `${run.database}: audits judged/s ÷ what ${integer(run.auditLoad.copies)} copies need (1 per copy per ${run.auditLoad.intervalHours} h)`,
        value: `${audits.headroom.toFixed(0)}×`,
        target: '≥ 1×',
        verdict: audits.headroom >= 1 ? 'pass' : 'FAIL',
        detail: `${decimal(audits.judgedPerSecond)}/s ÷ ${decimal(audits.required)}/s`,
      },
    ];
  });
}
