import { get, query } from './api.js';
import { barChart, rescuedChart } from './charts.js';
import { formatBytes, formatNumber, h, replaceIfChanged, table } from './dom.js';

export const title = 'Overview';

/** The groups the API sums rather than names: no list of assets to link to. */
const UNLINKED_GROUPS = ['(none)', '(other)'];

/** A figure links to its page only when that page will show what the figure counts. */
function figure(name, label, value, href) {
  return h('div', { class: 'figure' }, h('dt', {}, label), h('dd', { 'data-figure': name }, href ? h('a', { href }, value) : value));
}

/** A link shown only for a count above zero: a link to an empty list would be a false lead. */
const when = (count, href) => (count > 0 ? href : undefined);

function progressTable(caption, kind, groups) {
  return table(
    caption,
    [kind, 'Assets', 'At target', 'At risk', 'No copy yet', 'Rescued'],
    groups.map((group) => [
      kind === 'Organization' && !UNLINKED_GROUPS.includes(group.name)
        ? h('a', { href: `#/assets${query({ organization: group.name })}` }, group.name)
        : group.name,
      formatNumber(group.assets),
      formatNumber(group.at_target),
      formatNumber(group.at_risk),
      formatNumber(group.without_copy),
      formatBytes(group.bytes_rescued_distinct),
    ]),
    'no asset yet.',
    { stack: false },
  );
}

/** What is proven of what holders claim, and the last day's audits: a claim counts only once proven. */
function proofsCard(summary) {
  const copies = summary.copies_by_proof;
  const audits = summary.audits_last_day;
  return h(
    'section',
    { 'aria-labelledby': 'proofs-title', class: 'card' },
    h('h2', { id: 'proofs-title' }, 'Proofs'),
    h(
      'dl',
      { class: 'figures' },
      figure('bytes_proven', 'Proven (counted copies)', formatBytes(summary.bytes_proven)),
      figure('bytes_claimed', 'Claimed (all copies)', formatBytes(summary.bytes_claimed)),
      figure('copies_proven', 'Copies proven', formatNumber(copies.proven ?? 0)),
      figure('copies_pending', 'Copies awaiting their spot check', formatNumber(copies.pending ?? 0)),
      figure('copies_unproven', 'Copies unproven (source not checkable)', formatNumber(copies.unproven ?? 0)),
      figure('copies_suspect', 'Copies suspect (last audit failed or missed)', formatNumber(copies.suspect ?? 0)),
      figure('copies_vetting', 'Copies waiting for their new node to be vetted', formatNumber(copies.vetting ?? 0)),
      figure('audits_passed', 'Audits passed, last 24\u00a0h', formatNumber(audits.passed)),
      figure('audits_failed', 'Audits failed, last 24\u00a0h', formatNumber(audits.failed)),
      figure('audits_missed', 'Audits missed, last 24\u00a0h', formatNumber(audits.missed)),
    ),
    h('p', { class: 'hint' }, 'Claimed: what holders report they keep. Proven: what passed a spot check against the source and keeps passing audits.'),
  );
}

function render(summary, user) {
  const states = Object.entries(summary.assets_by_state).map(([state, count]) => ({ label: state, value: count }));
  const priorities = Object.entries(summary.assets_by_priority).map(([priority, count]) => ({ label: priority, value: count }));
  const nodes = summary.nodes_by_status;
  // A user's Nodes and Rentals pages list only their own rentals and workers, not what these count.
  const nodesPage = (count) => (user.admin ? when(count, '#/nodes') : undefined);
  const before = summary.bytes_rescued - summary.rescued_by_day.reduce((sum, day) => sum + day.bytes, 0);
  return [
    h(
      'dl',
      { class: 'figures' },
      figure('assets_total', 'Assets', formatNumber(summary.assets_total), when(summary.assets_total, '#/assets')),
      figure('bytes_rescued_distinct', 'Rescued (each file once)', formatBytes(summary.bytes_rescued_distinct)),
      figure('bytes_rescued', 'Stored in counted copies', formatBytes(summary.bytes_rescued)),
      figure('copies', 'Copies / wanted', `${formatNumber(summary.copies.verified)} / ${formatNumber(summary.copies.wanted)}`),
      figure('active_allocations', 'Active allocations', formatNumber(summary.active_allocations)),
      figure('active_rentals', 'Active rentals', formatNumber(summary.active_rentals), user.admin ? when(summary.active_rentals, '#/rentals') : undefined),
      figure('nodes_alive', 'Nodes alive', formatNumber(nodes.alive), nodesPage(nodes.alive)),
      figure('nodes_suspect', 'Nodes suspect', formatNumber(nodes.suspect), nodesPage(nodes.suspect)),
      figure('nodes_dead', 'Nodes dead', formatNumber(nodes.dead), nodesPage(nodes.dead)),
      figure('nodes_offline', 'Nodes offline (stopped cleanly)', formatNumber(nodes.offline ?? 0), nodesPage(nodes.offline ?? 0)),
    ),
    h(
      'section',
      { 'aria-labelledby': 'risk-title', class: 'card' },
      h('h2', { id: 'risk-title' }, 'At risk'),
      h(
        'dl',
        { class: 'figures compact' },
        figure('without_copy', 'No copy yet', formatNumber(summary.at_risk.without_copy)),
        figure('under_replicated', 'Fewer copies than wanted', formatNumber(summary.at_risk.under_replicated)),
        figure('removed_from_source', 'Removed from source', formatNumber(summary.at_risk.removed_from_source)),
        figure('gone', 'Gone (no copy)', formatNumber(summary.at_risk.gone), when(summary.at_risk.gone, '#/assets?state=gone')),
        // Nodes found the catalogued size or checksum wrong: not handed out until a re-import fixes it.
        figure(
          'suspect',
          'Catalog suspect',
          formatNumber(summary.assets_by_state.suspect ?? 0),
          when(summary.assets_by_state.suspect ?? 0, '#/assets?state=suspect'),
        ),
      ),
    ),
    proofsCard(summary),
    h(
      'section',
      { 'aria-labelledby': 'progress-title' },
      h('h2', { id: 'progress-title' }, 'Progress by organization and dataset'),
      h('p', { class: 'hint' }, 'At risk: fewer copies than wanted. Rescued: the bytes of the files with a copy, each file once.'),
      progressTable('Progress by organization', 'Organization', summary.by_organization),
      progressTable('Progress by dataset', 'Dataset', summary.by_dataset),
    ),
    h(
      'div',
      { class: 'charts' },
      barChart('Assets by state', states),
      barChart('Assets by priority', priorities),
      rescuedChart(`Bytes stored in copies, last ${summary.rescued_by_day.length} days`, summary.rescued_by_day, before),
    ),
  ];
}

export function mount(root, { user }) {
  return {
    async refresh() {
      const summary = await get('/api/summary');
      replaceIfChanged(root, JSON.stringify(summary), () => render(summary, user));
    },
  };
}
