import { download, get, post } from './api.js';
import { announce, badge, formatBytes, formatEventData, formatTime, h, replaceIfChanged, table, timeOf } from './dom.js';

export const title = 'Asset';

function facts(asset) {
  const rows = [
    ['Id', asset.id],
    ['Name', asset.name],
    ['URL', h('a', { href: asset.url, rel: 'noreferrer noopener', target: '_blank' }, asset.url)],
    ['State', badge(asset.state)],
    ['Priority', h('span', { 'data-figure': 'priority' }, String(asset.priority))],
    ['Copies / wanted', `${asset.copies} / ${asset.replicas_target}`],
    ['Active allocations', String(asset.active_allocations)],
    ['Size', formatBytes(asset.size_bytes)],
    [
      'SHA-256',
      asset.sha256 ? h('span', {}, h('code', {}, asset.sha256), asset.sha256_agreed ? h('small', {}, ' agreed by its verified copies') : '') : 'unknown',
    ],
    ['Dataset', asset.dataset ?? '—'],
    ['Organization', asset.organization ?? '—'],
    ['Source', asset.source ?? '—'],
    ['Removed from source', formatTime(asset.removed_from_source)],
    ['Source errors', asset.source_error ? `${asset.source_errors}: ${asset.source_error}` : String(asset.source_errors)],
  ];
  return h(
    'dl',
    { class: 'facts' },
    rows.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]),
  );
}

/** A copy's latest spot check or audit: its verdict, and when. */
function lastAudit(audit) {
  if (!audit) return '—';
  return h('span', { 'data-audit': audit.verdict }, badge(audit.verdict), ' ', timeOf(audit.at));
}

function priorityForm(asset, refresh) {
  const select = h(
    'select',
    { id: 'new-priority', name: 'new_priority' },
    Array.from({ length: 10 }, (_, index) => h('option', { value: String(index + 1), selected: asset.priority === index + 1 }, String(index + 1))),
  );
  const form = h(
    'form',
    { class: 'filters card', 'aria-label': 'Change priority' },
    h('div', { class: 'field' }, h('label', { for: 'new-priority' }, 'New priority'), select),
    h('button', { type: 'submit' }, 'Set priority'),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await post('/update-ckan', { updates: [{ asset_id: asset.id, new_priority: Number(select.value) }] });
      announce(`Priority of ${asset.id} set to ${select.value}.`);
    } catch (error) {
      announce(`Could not change the priority: ${error.message}`);
    }
    await refresh();
  });
  return form;
}

/**
 * Download: the restore through the API (a volunteer's copy, checked against its sha256 on the
 * way), or the source itself when the control plane answers with a redirect to it.
 */
function downloadButton(asset) {
  const button = h('button', { type: 'button', id: 'download' }, 'Download');
  button.addEventListener('click', async () => {
    button.disabled = true;
    announce(`Downloading ${asset.name}…`);
    try {
      const answer = await download(`/assets/${encodeURIComponent(asset.id)}/content`);
      if (answer.redirected) {
        window.open(asset.url, '_blank', 'noopener,noreferrer');
        announce('The source still serves this file: opened it.');
        return;
      }
      const link = h('a', { href: URL.createObjectURL(answer.blob), download: asset.name });
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
      announce(`Downloaded ${asset.name}.`);
    } catch (error) {
      announce(`Could not download: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });
  return h('div', { class: 'filters card', 'aria-label': 'Get the data back' }, button);
}

export function mount(root, { arg, user }) {
  const details = h('div');
  const actions = h('div');
  root.append(h('p', {}, h('a', { href: '#/assets' }, '← All assets')), actions, details);
  const refresh = async () => {
    const asset = await get(`/assets/${encodeURIComponent(arg)}`);
    replaceIfChanged(details, JSON.stringify(asset), () => [
      facts(asset),
      table(
        'Copies',
        ['Node', 'Holder', 'Proof', 'Counts', 'Last audit', 'Bytes', 'SHA-256', 'Completed', 'Last proved'],
        asset.copies_detail.map((copy) => [
          copy.node_name,
          h('span', { 'data-holder': copy.holder_online ? 'online' : 'offline' }, badge(copy.holder_online ? 'online' : copy.holder_status)),
          copy.proof ? h('span', { 'data-proof': copy.proof }, badge(copy.proof)) : '—',
          copy.verified ? 'yes' : 'no',
          lastAudit(copy.last_audit),
          formatBytes(copy.bytes),
          h('code', {}, copy.sha256 ?? '—'),
          timeOf(copy.ended_at),
          timeOf(copy.proved_at),
        ]),
        'no copy yet.',
      ),
      table(
        'Allocations',
        ['#', 'Node', 'State', 'Created', 'Expires', 'Ended', 'Reason'],
        asset.allocations.map((allocation) => [
          String(allocation.id),
          allocation.node_name,
          badge(allocation.state),
          timeOf(allocation.created_at),
          formatTime(allocation.expires_at),
          timeOf(allocation.ended_at),
          allocation.end_reason ?? '—',
        ]),
        'none.',
      ),
      table(
        'History',
        ['When', 'What', 'Who', 'Details'],
        // The asset's whole trail: its own events and those of its allocations (#id as in Allocations).
        asset.history.map((event) => [
          timeOf(event.at),
          h('span', {}, event.kind, event.subject_type === 'allocation' ? h('small', {}, ` #${event.subject_id}`) : ''),
          event.actor,
          event.data ? h('code', {}, formatEventData(event.data)) : '—',
        ]),
        'no event yet.',
      ),
    ]);
    if (!actions.firstChild) {
      if (asset.copies > 0) actions.append(downloadButton(asset));
      if (user.admin) actions.append(priorityForm(asset, refresh));
    }
  };
  return { refresh };
}
