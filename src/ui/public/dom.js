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

export function formatNumber(value) {
  return value === null || value === undefined ? '—' : Number(value).toLocaleString('en');
}

/** A table with a caption and column headers; rows are arrays of cells (text or nodes). */
export function table(caption, headers, rows, empty = 'Nothing to show.') {
  if (rows.length === 0) return h('p', { class: 'empty' }, `${caption}: ${empty}`);
  return h(
    'div',
    { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h(
      'table',
      {},
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, headers.map((header) => h('th', { scope: 'col' }, header)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((cell) => h('td', {}, cell))))),
    ),
  );
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
