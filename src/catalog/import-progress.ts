import { createLiveBlock, formatBar, formatEta } from '../terminal.js';
import type { ImportProgress } from './catalog.service.js';

/** Where `dispatcher import` reports how far it is: pages as they are written, then size discovery. */
export interface ImportDisplay {
  pages(progress: ImportProgress): void;
  sizes(done: number, total: number, seconds: number): void;
  /** A line that stays, above the bar on a terminal: a retry and its reason, a portal's page cap, a long wait. */
  notice(line: string): void;
  /** The run ended (or failed): whatever is still shown stays. */
  finish(): void;
}

/** On a terminal, redrawing faster than this only costs time: size discovery reports every file. */
const REDRAW_EVERY_MS = 100;

const count = (value: number) => value.toLocaleString('en-US');

export function describeProgress(progress: ImportProgress): string {
  const of = progress.total === null ? '' : ` of ${progress.total}`;
  return `page ${progress.pages}: ${progress.datasets}${of} datasets, ${progress.resources} resources, ${Math.round(progress.resourcesPerSecond)} resources/s`;
}

function describeSizes(done: number, total: number, seconds: number): string {
  return `sizes: ${done} of ${total} files checked, ${Math.round(done / Math.max(0.001, seconds))} files/s`;
}

/** The terminal line for pages: a bar and an ETA when the portal counts its datasets. */
export function drawPages(progress: ImportProgress): string {
  const counts = `page ${count(progress.pages)} · ${count(progress.resources)} resources · ${count(Math.round(progress.resourcesPerSecond))} resources/s`;
  if (progress.total === null || progress.total <= 0) return `${counts} · ${count(progress.datasets)} datasets (the portal gives no total)`;
  const rate = progress.seconds > 0 ? progress.datasets / progress.seconds : 0;
  const left = formatEta(rate > 0 ? (progress.total - progress.datasets) / rate : Number.NaN);
  return `${formatBar(progress.datasets / progress.total)} ${count(progress.datasets)}/${count(progress.total)} datasets · ${counts} · ETA ${left}`;
}

function drawSizes(done: number, total: number, seconds: number): string {
  const rate = seconds > 0 ? done / seconds : 0;
  const left = formatEta(rate > 0 ? (total - done) / rate : Number.NaN);
  return `sizes ${formatBar(total > 0 ? done / total : 1)} ${count(done)}/${count(total)} files · ${count(Math.round(rate))} files/s · ETA ${left}`;
}

/** One line per page (and per file checked), as plain text: for logs, pipes and tests. */
export function createLineDisplay(log: (line: string) => void): ImportDisplay {
  return {
    pages: (progress) => log(describeProgress(progress)),
    sizes: (done, total, seconds) => log(describeSizes(done, total, seconds)),
    notice: log,
    finish: () => undefined,
  };
}

/**
 * A progress bar redrawn in place when `output` is a terminal (at most every 100 ms, and always
 * the last state); else the plain lines of `createLineDisplay`.
 */
export function createImportDisplay(output: NodeJS.WriteStream, elapsedMs: () => number): ImportDisplay {
  if (output.isTTY !== true) return createLineDisplay((line) => output.write(`${line}\n`));
  const block = createLiveBlock(output);
  let phase: 'pages' | 'sizes' | null = null;
  let pending: string | null = null;
  /** The bar on screen, to draw again below a notice. */
  let drawn: string | null = null;
  let drawnAt = Number.NEGATIVE_INFINITY;
  const flush = () => {
    if (pending !== null) block.draw([pending]);
    drawn = pending ?? drawn;
    pending = null;
    drawnAt = elapsedMs();
  };
  const keep = () => {
    block.keep();
    drawn = null;
  };
  const show = (next: 'pages' | 'sizes', line: string) => {
    // A finished phase's last line stays above the next one's.
    if (phase !== null && phase !== next) {
      flush();
      keep();
      drawnAt = Number.NEGATIVE_INFINITY;
    }
    phase = next;
    pending = line;
    if (elapsedMs() - drawnAt >= REDRAW_EVERY_MS) flush();
  };
  return {
    pages: (progress) => show('pages', drawPages(progress)),
    sizes: (done, total, seconds) => show('sizes', drawSizes(done, total, seconds)),
    notice(line) {
      block.print(line);
      pending ??= drawn;
      flush();
    },
    finish() {
      flush();
      keep();
      phase = null;
    },
  };
}
