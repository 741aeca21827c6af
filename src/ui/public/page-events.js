import { get, query } from './api.js';
import { formatEventData, h, timeOf } from './dom.js';

export const title = 'Events';
export const adminOnly = true;

function line(event) {
  const data = formatEventData(event.data);
  return h(
    'li',
    { 'data-event': event.id },
    timeOf(event.at),
    ' ',
    h('strong', {}, event.kind),
    ` ${event.subject_type} ${event.subject_id} by ${event.actor}`,
    data ? h('code', {}, data.length > 200 ? `${data.slice(0, 199)}…` : data) : '',
  );
}

/** A live feed: the newest events first; each poll adds only those not shown yet. */
export function mount(root, { params }) {
  let kind = params.get('kind') ?? '';
  let newest = 0;
  const feed = h('ol', { class: 'feed', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': 'Latest events' });
  const input = h('input', { id: 'event-kind', name: 'kind', value: kind, placeholder: 'e.g. node.drained' });
  const form = h(
    'form',
    {
      class: 'filters',
      role: 'search',
      onsubmit: async (event) => {
        event.preventDefault();
        kind = input.value.trim();
        newest = 0;
        feed.replaceChildren();
        await refresh();
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'event-kind' }, 'Kind'), input),
    h('button', { type: 'submit' }, 'Filter'),
  );
  root.append(form, h('p', { class: 'hint' }, 'Updated every few seconds.'), feed);
  const refresh = async () => {
    const items = (await get(`/events${query({ kind, limit: 50 })}`)).items.filter((event) => event.id > newest);
    if (items.length === 0) {
      if (!feed.firstChild) feed.append(h('li', { class: 'empty' }, 'No events yet.'));
      return;
    }
    feed.querySelector('.empty')?.remove();
    newest = items[0].id;
    feed.prepend(...items.map(line));
    while (feed.children.length > 200) feed.lastChild.remove();
  };
  return { refresh };
}
