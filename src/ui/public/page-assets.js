import { get, query } from './api.js';
import { badge, formatBytes, h, table } from './dom.js';

export const title = 'Assets';
const PAGE_SIZE = 25;
const STATES = ['pending', 'rescued', 'gone', 'unreachable', 'suspect'];

function field(id, label, control) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control);
}

function prioritySelect(id, value, anyLabel) {
  return h(
    'select',
    { id, name: id.replace('asset-', '').replace('-', '_') },
    h('option', { value: '' }, anyLabel),
    Array.from({ length: 10 }, (_, index) => h('option', { value: String(index + 1), selected: value === String(index + 1) }, String(index + 1))),
  );
}

/** Search and filters live in the URL (#/assets?state=…), so a filtered list can be linked to. */
export function mount(root, { params }) {
  const filters = {
    q: params.get('q') ?? '',
    state: params.get('state') ?? '',
    min_priority: params.get('min_priority') ?? '',
    max_priority: params.get('max_priority') ?? '',
    organization: params.get('organization') ?? '',
  };
  const cursors = [''];
  const results = h('div', { 'aria-live': 'polite', 'aria-busy': 'false' });

  const form = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter assets' },
    field('asset-q', 'Search', h('input', { id: 'asset-q', name: 'q', type: 'search', value: filters.q, placeholder: 'id, name, URL, dataset' })),
    field(
      'asset-state',
      'State',
      h(
        'select',
        { id: 'asset-state', name: 'state' },
        h('option', { value: '' }, 'any'),
        STATES.map((state) => h('option', { value: state, selected: filters.state === state }, state)),
      ),
    ),
    field('asset-min-priority', 'Priority from', prioritySelect('asset-min-priority', filters.min_priority, 'any')),
    field('asset-max-priority', 'Priority to', prioritySelect('asset-max-priority', filters.max_priority, 'any')),
    field('asset-organization', 'Organization', h('input', { id: 'asset-organization', name: 'organization', value: filters.organization })),
    h('button', { type: 'submit' }, 'Search'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    // The hash change mounts the page again with these filters.
    location.hash = `#/assets${query(data)}`;
  });

  const show = async () => {
    results.setAttribute('aria-busy', 'true');
    const cursor = cursors[cursors.length - 1];
    const page = await get(`/assets${query({ ...filters, cursor, limit: PAGE_SIZE })}`);
    const rows = page.items.map((asset) => [
      h('a', { href: `#/asset/${encodeURIComponent(asset.id)}` }, asset.id),
      asset.name,
      badge(asset.state),
      h('span', { 'data-priority': asset.id }, String(asset.priority)),
      `${asset.copies} / ${asset.replicas_target}`,
      formatBytes(asset.size_bytes),
      asset.organization ?? '—',
    ]);
    const previous = h('button', { type: 'button', disabled: cursors.length === 1, onclick: () => (cursors.pop(), show()) }, 'Previous page');
    const next = h('button', { type: 'button', disabled: !page.next_cursor, onclick: () => (cursors.push(page.next_cursor), show()) }, 'Next page');
    results.replaceChildren(
      table('Assets', ['Id', 'Name', 'State', 'Priority', 'Copies / wanted', 'Size', 'Organization'], rows, 'no asset matches.'),
      h('nav', { class: 'pager', 'aria-label': 'Pages of assets' }, previous, h('span', {}, `Page ${cursors.length}`), next),
    );
    results.setAttribute('aria-busy', 'false');
  };

  root.append(form, results);
  show().catch((error) => results.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Could not load assets: ${error.message}`)));
  // No polling here: a list that moved under the reader would lose their place.
  return {};
}
