import { printable } from '../lib/printable.js';
import { createLiveBlock, formatBar, formatEta } from '../terminal.js';
import type { DownloadEvents } from './asset-download.js';

/** Where `dispatcher fetch` reports a download's progress and its notices (retries, waits, skips). */
export interface FetchDisplay {
  /** The events of one asset's download, shown under `label`. */
  download(label: string): DownloadEvents;
  /** A line that stays (above the bar on a terminal). */
  notice(line: string): void;
  /** The download shown ended: the bar goes. */
  clear(): void;
}

const REDRAW_EVERY_MS = 100;
const PLAIN_EVERY_MS = 10_000;
const KIB = 1024;

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let [value, unit] = [bytes, 0];
  while (value >= KIB && unit < units.length - 1) [value, unit] = [value / KIB, unit + 1];
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** `[####----]  45% 1.2 GiB / 2.6 GiB · 35.0 MiB/s · ETA 40s  name`; without a total, no bar. */
export function describeTransfer(label: string, done: number, total: number | null, rate: number): string {
  const eta = total !== null && rate > 0 ? formatEta((total - done) / rate) : '—';
  const amount = total !== null ? `${formatBar(total > 0 ? done / total : 1)} ${formatBytes(done)} / ${formatBytes(total)}` : formatBytes(done);
  return `${amount} · ${formatBytes(rate)}/s · ETA ${eta}  ${label}`;
}

/**
 * On a terminal, one bar redrawn in place (bytes, rate, ETA); elsewhere plain lines: when a
 * download starts and every 10 s while it runs. Everything from the server is made printable.
 */
export function createFetchDisplay(output: NodeJS.WriteStream, now: () => number = Date.now): FetchDisplay {
  const tty = output.isTTY === true;
  const block = createLiveBlock(output);
  const line = (text: string) => (tty ? block.print(printable(text)) : output.write(`${printable(text)}\n`));
  return {
    download(rawLabel) {
      const label = printable(rawLabel);
      let [total, startedAt, startedFrom, shownAt, done] = [null as number | null, now(), 0, Number.NEGATIVE_INFINITY, 0];
      const show = (force: boolean) => {
        const at = now();
        if (!force && at - shownAt < (tty ? REDRAW_EVERY_MS : PLAIN_EVERY_MS)) return;
        shownAt = at;
        const seconds = (at - startedAt) / 1000;
        const text = describeTransfer(label, done, total, seconds > 0 ? (done - startedFrom) / seconds : 0);
        if (tty) block.draw([text]);
        else output.write(`${text}\n`);
      };
      return {
        begin(announced, from, via) {
          [total, startedAt, startedFrom, done] = [announced, now(), from, from];
          line(`${label}: ${from > 0 ? `resuming at ${formatBytes(from)}` : 'downloading'}${total === null ? '' : ` (${formatBytes(total)})`} from ${via}`);
          shownAt = tty ? Number.NEGATIVE_INFINITY : now();
        },
        progress(bytes) {
          done = bytes;
          show(false);
        },
        notice: (text) => line(`${label}: ${text}`),
      };
    },
    notice: line,
    clear: () => block.clear(),
  };
}
