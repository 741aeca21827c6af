// Small hand-written SVG line charts: no dependency, readable in any browser or on GitHub.

export interface Series {
  label: string;
  points: [number, number][];
}

const COLOURS = ['#1b6ca8', '#d1495b', '#2e933c', '#edae49', '#7d5ba6', '#555555'];
const WIDTH = 720;
const HEIGHT = 300;
const PAD = { left: 64, right: 16, top: 28, bottom: 40 };

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function ticks(max: number): number[] {
  if (max <= 0) return [0];
  const step = 10 ** Math.floor(Math.log10(max));
  const unit = max / step > 5 ? step * 2 : max / step > 2 ? step : step / 2;
  const values: number[] = [];
  for (let value = 0; value <= max * 1.0001; value += unit) values.push(value);
  return values;
}

/** A line chart of the series over x (hours), with axes, ticks and a legend. */
export function lineChart(title: string, series: Series[], axes: { x: string; y: string; yMax?: number; percent?: boolean }): string {
  const xs = series.flatMap((each) => each.points.map(([x]) => x));
  const ys = series.flatMap((each) => each.points.map(([, y]) => y));
  const xMax = Math.max(1, ...xs);
  const yMax = axes.yMax ?? Math.max(1, ...ys) * 1.05;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const px = (x: number) => PAD.left + (x / xMax) * plotW;
  const py = (y: number) => PAD.top + plotH - (Math.min(y, yMax) / yMax) * plotH;
  const label = (value: number) =>
    axes.percent ? `${Math.round(value * 100)}%` : value >= 1000 ? `${Math.round(value / 100) / 10}k` : String(Math.round(value * 10) / 10);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="11">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escape(title)}</text>`,
  ];
  for (const value of ticks(yMax)) {
    parts.push(`<line x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${py(value)}" y2="${py(value)}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${PAD.left - 6}" y="${py(value) + 4}" text-anchor="end">${label(value)}</text>`);
  }
  for (const value of ticks(xMax)) {
    parts.push(`<text x="${px(value)}" y="${HEIGHT - PAD.bottom + 16}" text-anchor="middle">${Math.round(value)}</text>`);
  }
  parts.push(`<text x="${PAD.left + plotW / 2}" y="${HEIGHT - 6}" text-anchor="middle">${escape(axes.x)}</text>`);
  parts.push(`<text x="14" y="${PAD.top + plotH / 2}" text-anchor="middle" transform="rotate(-90 14 ${PAD.top + plotH / 2})">${escape(axes.y)}</text>`);
  parts.push(`<rect x="${PAD.left}" y="${PAD.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  series.forEach((each, index) => {
    const colour = COLOURS[index % COLOURS.length] as string;
    const path = each.points.map(([x, y], at) => `${at === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    const legendY = PAD.top + 14 + index * 14;
    parts.push(`<line x1="${PAD.left + 10}" x2="${PAD.left + 26}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${colour}" stroke-width="2"/>`);
    parts.push(`<text x="${PAD.left + 30}" y="${legendY}">${escape(each.label)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
