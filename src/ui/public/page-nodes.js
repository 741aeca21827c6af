import { get, post } from './api.js';
import { announce, badge, formatBytes, formatNumber, h, replaceIfChanged, table, timeOf } from './dom.js';

export const title = 'Nodes';

function actions(node, user, refresh) {
  if (!user.admin) return '';
  const act = (action, label) =>
    h(
      'button',
      {
        type: 'button',
        id: `${action}-${node.node_id}`,
        'aria-label': `${label} ${node.name}`,
        onclick: async (event) => {
          event.currentTarget.disabled = true;
          try {
            await post(`/api/nodes/${node.node_id}/${action}`);
            announce(`${node.name}: ${action === 'drain' ? 'draining' : 'cleared'}.`);
          } catch (error) {
            announce(`${label} ${node.name} failed: ${error.message}`);
          }
          await refresh();
        },
      },
      label,
    );
  return h('span', { class: 'actions' }, node.draining ? '' : act('drain', 'Drain'), act('clear', 'Clear'));
}

/** The share of its audits a node passed within the score window, with the counts behind it; — before any. */
function auditScore(node) {
  if (node.audit_score === null || node.audit_score === undefined) return '—';
  const total = node.audits_passed + node.audits_failed;
  return h(
    'span',
    { 'data-audit-score': String(node.audit_score) },
    `${Math.round(node.audit_score * 100)}%`,
    h('small', {}, ` ${formatNumber(node.audits_passed)} of ${formatNumber(total)} passed`),
  );
}

function render(nodes, user, refresh) {
  const headers = ['Node', 'Status', 'Free space', 'Last heartbeat', 'Rate', 'Active', 'Strikes', 'Audit score', 'Tags', ...(user.admin ? ['Actions'] : [])];
  return table(
    'Nodes',
    headers,
    nodes.map((node) => [
      h('span', { 'data-node': node.name }, node.name, node.hostname !== node.name ? h('small', {}, ` ${node.hostname}`) : ''),
      h(
        'span',
        {},
        badge(node.status),
        node.draining ? badge('draining') : '',
        node.quarantined ? badge('quarantined') : '',
        node.allocated ? badge('rented') : '',
      ),
      formatBytes(node.free_bytes),
      timeOf(node.last_heartbeat, { seconds: false }),
      node.download_rate_bps === null ? '—' : `${formatBytes(node.download_rate_bps)}/s`,
      formatNumber(node.active_allocations),
      formatNumber(node.strikes),
      auditScore(node),
      Object.entries(node.tags)
        .map(([key, value]) => `${key}=${value}`)
        .join(', ') || '—',
      ...(user.admin ? [actions(node, user, refresh)] : []),
    ]),
    'no node is visible to you.',
  );
}

export function mount(root, { user }) {
  const refresh = async () => {
    const nodes = await get('/api/nodes');
    replaceIfChanged(root, JSON.stringify(nodes), () => render(nodes, user, refresh));
  };
  return { refresh };
}
