// Charts as inline SVG drawn from API data: each has a title for screen readers, and the figures
// it shows are also written as text beside it.
import { formatBytes, h, s } from './dom.js';

/** Vertical bars with their value above each: [{ label, value, href? }]. */
export function barChart(title, entries) {
  const width = 320;
  const height = 160;
  const bottom = 20;
  const top = 16;
  const max = Math.max(1, ...entries.map((entry) => entry.value));
  const slot = width / Math.max(1, entries.length);
  const bars = entries.map((entry, index) => {
    const barHeight = ((height - bottom - top) * entry.value) / max;
    const x = index * slot + slot * 0.15;
    const y = height - bottom - barHeight;
    return s(
      'g',
      {},
      s(
        'rect',
        { x, y, width: slot * 0.7, height: Math.max(barHeight, entry.value > 0 ? 1 : 0), class: 'bar' },
        s('title', {}, `${entry.label}: ${entry.value}`),
      ),
      s('text', { x: x + slot * 0.35, y: y - 3, 'text-anchor': 'middle', class: 'value' }, entry.value),
      s('text', { x: x + slot * 0.35, y: height - 5, 'text-anchor': 'middle', class: 'label' }, entry.label),
    );
  });
  return h(
    'figure',
    { class: 'chart' },
    s(
      'svg',
      { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${title}: ${entries.map((entry) => `${entry.label} ${entry.value}`).join(', ')}` },
      bars,
    ),
    h('figcaption', {}, title),
  );
}

/** Cumulative bytes over days, as an area: [{ day, bytes }] with the total before the first day. */
export function rescuedChart(title, days, before) {
  const width = 320;
  const height = 140;
  const pad = 4;
  let total = before;
  const points = days.map((day) => ({ day: day.day, total: (total += day.bytes) }));
  const max = Math.max(1, ...points.map((point) => point.total));
  const x = (index) => pad + ((width - 2 * pad) * index) / Math.max(1, points.length - 1);
  const y = (value) => height - 18 - ((height - 36) * value) / max;
  const line = points.map((point, index) => `${index === 0 ? 'M' : 'L'}${x(index).toFixed(1)},${y(point.total).toFixed(1)}`).join(' ');
  const area = `${line} L${x(points.length - 1).toFixed(1)},${height - 18} L${x(0).toFixed(1)},${height - 18} Z`;
  const first = points[0];
  const last = points[points.length - 1];
  return h(
    'figure',
    { class: 'chart' },
    s(
      'svg',
      {
        viewBox: `0 0 ${width} ${height}`,
        role: 'img',
        'aria-label': `${title}: ${formatBytes(first?.total ?? 0)} on ${first?.day} to ${formatBytes(last?.total ?? 0)} on ${last?.day}`,
      },
      s('path', { d: area, class: 'area' }),
      s('path', { d: line, class: 'line' }),
      s('text', { x: pad, y: 12, class: 'value' }, formatBytes(last?.total ?? 0)),
      s('text', { x: pad, y: height - 4, class: 'label' }, first?.day ?? ''),
      s('text', { x: width - pad, y: height - 4, 'text-anchor': 'end', class: 'label' }, last?.day ?? ''),
    ),
    h('figcaption', {}, title),
  );
}

/** Windows on a shared time axis, one row each: [{ label, start, end, kind }], times in ms. */
export function timeline(title, rows, now) {
  const width = 640;
  const rowHeight = 22;
  const left = 150;
  const height = rows.length * rowHeight + 28;
  const from = Math.min(...rows.map((row) => row.start));
  const to = Math.max(from + 1, ...rows.map((row) => row.end));
  const x = (time) => left + ((width - left - 8) * (time - from)) / (to - from);
  const day = (time) => new Date(time).toISOString().slice(0, 16).replace('T', ' ');
  const bars = rows.map((row, index) =>
    s(
      'g',
      {},
      s('text', { x: 4, y: index * rowHeight + 15, class: 'label' }, row.label.length > 22 ? `${row.label.slice(0, 21)}…` : row.label),
      s(
        'rect',
        { x: x(row.start), y: index * rowHeight + 4, width: Math.max(2, x(row.end) - x(row.start)), height: rowHeight - 8, class: `window window-${row.kind}` },
        s('title', {}, `${row.label}: ${day(row.start)} to ${day(row.end)} UTC`),
      ),
    ),
  );
  const axisY = rows.length * rowHeight + 4;
  return h(
    'figure',
    { class: 'chart wide' },
    s(
      'svg',
      {
        viewBox: `0 0 ${width} ${height}`,
        role: 'img',
        'aria-label': `${title}, ${day(from)} to ${day(to)} UTC: ${rows.map((row) => `${row.label} ${day(row.start)} to ${day(row.end)}`).join('; ')}`,
      },
      bars,
      s('line', { x1: left, x2: width - 8, y1: axisY, y2: axisY, class: 'axis' }),
      now >= from && now <= to ? s('line', { x1: x(now), x2: x(now), y1: 0, y2: axisY, class: 'now' }) : null,
      s('text', { x: left, y: axisY + 16, class: 'label' }, day(from)),
      s('text', { x: width - 8, y: axisY + 16, 'text-anchor': 'end', class: 'label' }, day(to)),
    ),
    h('figcaption', {}, `${title} (times in UTC${now >= from && now <= to ? '; the dashed line is now' : ''})`),
  );
}
