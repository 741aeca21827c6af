import { get } from './api.js';
import { barChart, rescuedChart } from './charts.js';
import { formatBytes, formatNumber, h, replaceIfChanged } from './dom.js';

export const title = 'Overview';

function figure(name, label, value, href) {
  return h('div', { class: 'figure' }, h('dt', {}, label), h('dd', { 'data-figure': name }, href ? h('a', { href }, value) : value));
}

function render(summary) {
  const states = Object.entries(summary.assets_by_state).map(([state, count]) => ({ label: state, value: count }));
  const priorities = Object.entries(summary.assets_by_priority).map(([priority, count]) => ({ label: priority, value: count }));
  const nodes = summary.nodes_by_status;
  const before = summary.bytes_rescued - summary.rescued_by_day.reduce((sum, day) => sum + day.bytes, 0);
  return [
    h(
      'dl',
      { class: 'figures' },
      figure('assets_total', 'Assets', formatNumber(summary.assets_total), '#/assets'),
      figure('bytes_rescued', 'Bytes rescued', formatBytes(summary.bytes_rescued)),
      figure('copies', 'Copies / wanted', `${formatNumber(summary.copies.verified)} / ${formatNumber(summary.copies.wanted)}`),
      figure('active_allocations', 'Active allocations', formatNumber(summary.active_allocations)),
      figure('active_rentals', 'Active rentals', formatNumber(summary.active_rentals), '#/rentals'),
      figure('nodes_alive', 'Nodes alive', formatNumber(nodes.alive), '#/nodes'),
      figure('nodes_suspect', 'Nodes suspect', formatNumber(nodes.suspect), '#/nodes'),
      figure('nodes_dead', 'Nodes dead', formatNumber(nodes.dead), '#/nodes'),
      figure('nodes_offline', 'Nodes offline (stopped cleanly)', formatNumber(nodes.offline ?? 0), '#/nodes'),
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
        figure('gone', 'Gone (no copy)', formatNumber(summary.at_risk.gone), '#/assets?state=gone'),
        // Nodes found the catalogued size or checksum wrong: not handed out until a re-import fixes it.
        figure('suspect', 'Catalog suspect', formatNumber(summary.assets_by_state.suspect ?? 0), '#/assets?state=suspect'),
      ),
    ),
    h(
      'div',
      { class: 'charts' },
      barChart('Assets by state', states),
      barChart('Assets by priority', priorities),
      rescuedChart(`Bytes rescued, last ${summary.rescued_by_day.length} days`, summary.rescued_by_day, before),
    ),
  ];
}

export function mount(root) {
  return {
    async refresh() {
      const summary = await get('/api/summary');
      replaceIfChanged(root, JSON.stringify(summary), () => render(summary));
    },
  };
}
