// Small DOM helpers: elements from data, never from HTML strings (no injection from asset names).
const SVG_NS = 'http://www.w3.org/2000/svg';

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** h('button', { type: 'button', onclick }, 'Drain') */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') element.addEventListener(key.slice(2), value);
    else if (key === 'class') element.className = value;
    else if (key === 'value') element.value = value;
    else element.setAttribute(key, value === true ? '' : String(value));
  }
  return append(element, children);
}

export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) if (value !== undefined && value !== null) element.setAttribute(key, String(value));
  return append(element, children);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return '—';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

/** Times as the API gives them (UTC), shortened: 2026-01-01 10:00 UTC. */
export function formatTime(iso) {
  if (!iso) return '—';
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** To the second, for events: many happen within one minute. 2026-01-01 10:00:05 UTC. */
export function formatSeconds(iso) {
  if (!iso) return '—';
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
}

const RELATIVE_UNITS = [
  ['year', 365 * 86_400_000],
  ['month', 30 * 86_400_000],
  ['day', 86_400_000],
  ['hour', 3_600_000],
  ['minute', 60_000],
  ['second', 1000],
];
const relativeFormat = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

/** "3 minutes ago", "in 2 hours": from this browser's clock. */
export function relativeTime(iso, now = Date.now()) {
  const difference = Date.parse(iso) - now;
  const [unit, size] = RELATIVE_UNITS.find(([, length]) => Math.abs(difference) >= length) ?? RELATIVE_UNITS[RELATIVE_UNITS.length - 1];
  return relativeFormat.format(Math.round(difference / size), unit);
}

/** A <time> (to the second unless told) whose tooltip says how long ago, worked out when hovered or focused. */
export function timeOf(iso, { seconds = true } = {}) {
  if (!iso) return '—';
  const refresh = (event) => event.currentTarget.setAttribute('title', relativeTime(iso));
  return h('time', { datetime: iso, title: relativeTime(iso), onmouseenter: refresh, onfocus: refresh }, seconds ? formatSeconds(iso) : formatTime(iso));
}

// Event data keeps times as the database does (epoch milliseconds); these keys hold such times.
const TIME_KEY = /(^at|_at|_until|^until)$/;

/** Event data as "key value" pairs, epoch-millisecond times as dates: `expires_at 2026-01-02 00:00:00 UTC`. */
export function formatEventData(data) {
  if (!data) return '';
  return Object.entries(data)
    .map(([key, value]) => {
      if (TIME_KEY.test(key) && typeof value === 'number' && Number.isFinite(value)) return `${key} ${formatSeconds(new Date(value).toISOString())}`;
      return `${key} ${value !== null && typeof value === 'object' ? JSON.stringify(value) : String(value)}`;
    })
    .join(' · ');
}

export function formatNumber(value) {
  return value === null || value === undefined ? '—' : Number(value).toLocaleString('en');
}

/**
 * A table with a caption and column headers; rows are arrays of cells (text or nodes). Wider than
 * its place, it scrolls sideways and says so; on a phone each row of a `stack` table becomes a
 * card, every cell labelled with its header (the roles keep it a table for screen readers then).
 */
export function table(caption, headers, rows, empty = 'Nothing to show.', { stack = true } = {}) {
  if (rows.length === 0) return h('p', { class: 'empty' }, `${caption}: ${empty}`);
  const wrap = h(
    'div',
    { class: stack ? 'table-wrap stack' : 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h(
      'table',
      { role: 'table' },
      h('caption', {}, caption),
      h(
        'thead',
        { role: 'rowgroup' },
        h(
          'tr',
          { role: 'row' },
          headers.map((header) => h('th', { scope: 'col', role: 'columnheader' }, header)),
        ),
      ),
      h(
        'tbody',
        { role: 'rowgroup' },
        rows.map((cells) =>
          h(
            'tr',
            { role: 'row' },
            cells.map((cell, index) => h('td', { role: 'cell', 'data-label': headers[index] ?? '' }, h('span', { class: 'cell' }, cell))),
          ),
        ),
      ),
    ),
  );
  const hint = h('p', { class: 'scroll-hint', 'aria-hidden': 'true' }, 'Scroll sideways for more columns →');
  const observer = new ResizeObserver(() => wrap.toggleAttribute('data-overflowing', wrap.scrollWidth > wrap.clientWidth + 1));
  observer.observe(wrap);
  observer.observe(wrap.firstChild);
  return h('div', { class: 'table-block' }, hint, wrap);
}

export function badge(text) {
  return h('span', { class: `badge badge-${String(text).replace(/[^a-z-]/g, '')}` }, text);
}

/** Replaces a container's content, only when it changed, so polling keeps focus and scroll. */
export function replaceIfChanged(container, key, build) {
  if (container.dataset.key === key) return false;
  container.dataset.key = key;
  const focused = container.contains(document.activeElement) ? document.activeElement.id : '';
  container.replaceChildren(...[build()].flat());
  if (focused) document.getElementById(focused)?.focus();
  return true;
}

export function announce(message) {
  const region = document.getElementById('announce');
  region.textContent = '';
  // A fresh text node is announced even when the message repeats.
  requestAnimationFrame(() => {
    region.textContent = message;
  });
}
