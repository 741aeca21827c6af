import fs from 'node:fs';
import path from 'node:path';
import type { CampaignRun } from './campaign.js';
import type { Figures } from './figures.js';
import { lineChart } from './svg.js';

const GIB = 1024 ** 3;

/** Writes REPORT.md, its three SVG charts and figures.json into `directory`. */
export function writeReport(directory: string, run: CampaignRun, figures: Figures): void {
  fs.mkdirSync(directory, { recursive: true });
  const samples = run.sampler.samples;
  const classes = run.config.priorityClasses;
  fs.writeFileSync(
    path.join(directory, 'copies-at-target.svg'),
    lineChart(
      'Assets at their target of counted copies, per priority class',
      classes.map(([min, max], index) => ({ label: `priority ${min}-${max}`, points: samples.map((sample) => [sample.hour, sample.atTarget[index] ?? 0]) })),
      { x: 'simulated hours', y: 'share of the class', yMax: 1, percent: true },
    ),
  );
  fs.writeFileSync(
    path.join(directory, 'nodes-online.svg'),
    lineChart(
      'Nodes online (simulated) and alive (as the control plane sees them)',
      [
        { label: 'online', points: samples.map((sample) => [sample.hour, sample.nodesOnline]) },
        { label: 'alive per control plane', points: samples.map((sample) => [sample.hour, sample.nodesByStatus.alive ?? 0]) },
        { label: 'dead per control plane', points: samples.map((sample) => [sample.hour, sample.nodesByStatus.dead ?? 0]) },
      ],
      { x: 'simulated hours', y: 'nodes' },
    ),
  );
  fs.writeFileSync(
    path.join(directory, 'repair-queue.svg'),
    lineChart(
      'Repair queue: assets below target again, and copies the control plane still counts on dead disks',
      [
        { label: 'below target again (counted)', points: samples.map((sample) => [sample.hour, sample.repairQueue]) },
        { label: 'at target as counted, not on living disks', points: samples.map((sample) => [sample.hour, sample.hiddenDeficit]) },
        { label: 'copies waiting for their spot check', points: samples.map((sample) => [sample.hour, sample.pendingProofs]) },
      ],
      { x: 'simulated hours', y: 'assets / copies' },
    ),
  );
  fs.writeFileSync(path.join(directory, 'figures.json'), `${JSON.stringify(figures, null, 2)}\n`);
  fs.writeFileSync(path.join(directory, 'REPORT.md'), markdown(run, figures));
}

function markdown(run: CampaignRun, figures: Figures): string {
  const { config } = run;
  const hours = (value: number | null) => (value === null ? 'never' : `${value} h`);
  const failure = figures.mass_failure;
  const lines = [
    `# Campaign report`,
    '',
    `${figures.nodes} nodes (${config.nodes} at the start), ${figures.assets} assets, ${config.days} simulated days, seed ${config.seed}, on ${figures.database}.`,
    `Wall time: ${figures.wall_seconds.run} s for the run (${figures.wall_seconds.per_simulated_day} s per simulated day), ${figures.wall_seconds.setup} s to set up.`,
    '',
    '## Time to target, per priority class',
    '',
    '| priorities | assets | 50 % at target | 90 % | 100 % | at target at the end |',
    '|---|---|---|---|---|---|',
    ...figures.priority_classes.map(
      (entry) =>
        `| ${entry.min_priority}–${entry.max_priority} | ${entry.assets} | ${hours(entry.hours_to_50)} | ${hours(entry.hours_to_90)} | ${hours(entry.hours_to_100)} | ${(entry.at_target_at_end * 100).toFixed(1)} % |`,
    ),
    '',
    '![copies at target](copies-at-target.svg)',
    '',
    '## Losses, traffic and load',
    '',
    `- Assets lost (source gone, no copy left on a living disk): **${figures.assets_lost}**; \`gone\` as the control plane records it: ${figures.assets_gone_per_control_plane}.`,
    `- Downloaded ${(figures.bytes_downloaded / GIB).toFixed(1)} GiB; kept (copies counting at the end) ${(figures.bytes_kept / GIB).toFixed(1)} GiB; wasted ${(figures.bytes_wasted / GIB).toFixed(1)} GiB: waste ratio **${(figures.waste_ratio * 100).toFixed(2)} %**.`,
    `- Waste by reason (GiB): ${Object.entries(figures.waste_by_reason)
      .map(([reason, bytes]) => `${reason} ${(bytes / GIB).toFixed(1)}`)
      .join(', ')}.`,
    `- Peak load: **${figures.peak_allocations_per_second} allocations/s** granted, ${figures.peak_requests_per_second} /allocate requests/s (busiest simulated minute); ${figures.grants} grants and ${figures.requests} requests in all, ${figures.completions} completions.`,
    `- Largest share of counted copies held by one operator: ${(figures.largest_operator_share * 100).toFixed(2)} %.`,
    `- Node-asset pairs granted twice: ${figures.retries.pairs_granted_twice}; three times or more: ${figures.retries.pairs_granted_3_or_more}; most grants of one pair: ${figures.retries.most_grants_of_one_pair}.`,
    `- Steps where a lower-priority asset got a further copy while a priority ≥ 8 asset waited for its first although it could have been given: ${figures.starvation_steps}${figures.starvation_example ? ` (first: ${figures.starvation_example})` : ''}.`,
    `- Releases by cause: ${JSON.stringify(figures.releases)}; refused completions: ${JSON.stringify(figures.refused_completions)}; refusals: ${JSON.stringify(figures.refusals)}.`,
    `- Audits: ${JSON.stringify(figures.audits)}; copies reported missing by their agents: ${figures.copies_reported_missing}.`,
    '',
    '## The mass failure',
    '',
    failure
      ? [
          `At hour ${failure.hour}: ${failure.assets_at_target_before} assets were at target; ${failure.recoverable} of them recoverable (a copy survived or the source still serves it).`,
          `Repair traffic for them: ${(failure.repair_bytes / GIB).toFixed(1)} GiB. Back at target on living disks: 99 % after ${hours(failure.hours_to_99)}, 100 % after ${hours(failure.hours_to_100)}; lowest share ${(failure.lowest_recovered_share * 100).toFixed(1)} %.`,
          `As the control plane counts copies, 100 % after ${hours(failure.hours_to_100_as_counted)}: it keeps counting a dead node's copies until they are a whole AUDIT_INTERVAL_HOURS overdue.`,
        ].join('\n')
      : 'No mass failure in this campaign.',
    '',
    '![nodes online](nodes-online.svg)',
    '',
    '![repair queue](repair-queue.svg)',
    '',
    '## Where the wall time went (seconds)',
    '',
    `Loops: ${JSON.stringify(figures.wall_seconds.loops)}. Agents' calls: ${JSON.stringify(figures.wall_seconds.calls)}. /allocate (batched): ${figures.wall_seconds.allocate}.`,
    '',
    '## Settings',
    '',
    '```json',
    JSON.stringify({ control_plane: config.controlPlane, node_model: config.nodeModel, asset_model: config.assetModel, events: config.events }, null, 2),
    '```',
    '',
  ];
  return lines.join('\n');
}
