import { describe, expect, it } from 'vitest';
import type { ImportProgress } from './catalog.service.js';
import { createImportDisplay } from './import-progress.js';

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  return { stream: { isTTY, write: (text: string) => writes.push(text) } as unknown as NodeJS.WriteStream, writes };
}

function fakeElapsed() {
  let ms = 0;
  return { elapsedMs: () => ms, advance: (by: number) => (ms += by) };
}

const page = (pages: number, datasets: number, total: number | null, seconds: number): ImportProgress => ({
  pages,
  datasets,
  total,
  resources: datasets * 3,
  resourcesPerSecond: (datasets * 3) / seconds,
  seconds,
});

// Erasing the one-line block: cursor up one line, erase to the end of the screen.
const ERASE = '\x1b[1A\x1b[J';

describe('dispatcher import progress', () => {
  it('draws a bar on a terminal when the portal counts its datasets: done of total, resources, rate, ETA', () => {
    const clock = fakeElapsed();
    const { stream, writes } = fakeStream(true);
    const display = createImportDisplay(stream, clock.elapsedMs);
    display.pages(page(1, 1000, 4000, 2));
    expect(writes).toEqual(['[######------------------]  25% 1,000/4,000 datasets · page 1 · 3,000 resources · 1,500 resources/s · ETA 6s\n']);
    clock.advance(2000);
    display.pages(page(2, 2000, 4000, 4));
    // The line is redrawn in place: erased, then written again.
    expect(writes.slice(1)).toEqual([ERASE, '[############------------]  50% 2,000/4,000 datasets · page 2 · 6,000 resources · 1,500 resources/s · ETA 4s\n']);
  });

  it('shows counts and rate without a bar or ETA when the portal gives no total (data.gov)', () => {
    const { stream, writes } = fakeStream(true);
    createImportDisplay(stream, fakeElapsed().elapsedMs).pages(page(3, 300, null, 1.5));
    expect(writes).toEqual(['page 3 · 900 resources · 600 resources/s · 300 datasets (the portal gives no total)\n']);
  });

  it('redraws at most every 100 ms, always shows the last state, and keeps the pages line above the sizes bar', () => {
    const clock = fakeElapsed();
    const { stream, writes } = fakeStream(true);
    const display = createImportDisplay(stream, clock.elapsedMs);
    display.pages(page(1, 10, 30, 1));
    clock.advance(50);
    display.pages(page(2, 20, 30, 2));
    expect(writes).toHaveLength(1); // too soon: held back
    display.sizes(1, 4, 0.5); // a new phase: the pages bar is finished first, and stays
    expect(writes.slice(1)).toEqual([
      ERASE,
      expect.stringContaining(' 66% 20/30 datasets · page 2'),
      'sizes [######------------------]  25% 1/4 files · 2 files/s · ETA 2s\n',
    ]);
    clock.advance(10);
    display.sizes(2, 4, 0.6);
    display.sizes(4, 4, 0.7);
    expect(writes).toHaveLength(4);
    display.finish();
    expect(writes.slice(4)).toEqual([ERASE, 'sizes [########################] 100% 4/4 files · 6 files/s · ETA 0s\n']);
    // Nothing is erased after the end: the summary follows below.
    display.finish();
    expect(writes).toHaveLength(6);
  });

  it('prints a notice (a retry, a page cap) as a line that stays above the bar, and draws the bar again below it', () => {
    const clock = fakeElapsed();
    const { stream, writes } = fakeStream(true);
    const display = createImportDisplay(stream, clock.elapsedMs);
    display.pages(page(1, 10, 30, 1));
    display.notice('portal.example.org: connection refused, waiting 1 s, then retry 1 of 5');
    expect(writes.slice(1)).toEqual([
      ERASE,
      'portal.example.org: connection refused, waiting 1 s, then retry 1 of 5\n',
      expect.stringContaining(' 33% 10/30 datasets · page 1'),
    ]);
    // Before any bar, a notice is just a line.
    const first = fakeStream(true);
    createImportDisplay(first.stream, clock.elapsedMs).notice('waiting 42 min more for catalog.data.gov (Retry-After)');
    expect(first.writes).toEqual(['waiting 42 min more for catalog.data.gov (Retry-After)\n']);
  });

  it('falls back to one plain line per page elsewhere, with no terminal codes', () => {
    const { stream, writes } = fakeStream(false);
    const display = createImportDisplay(stream, fakeElapsed().elapsedMs);
    display.pages(page(1, 10, 30, 1));
    display.pages(page(2, 20, null, 2));
    display.sizes(3, 4, 1);
    display.notice('portal returns at most 100 datasets per page; continuing with --rows 100');
    display.finish();
    expect(writes).toEqual([
      'page 1: 10 of 30 datasets, 30 resources, 30 resources/s\n',
      'page 2: 20 datasets, 60 resources, 30 resources/s\n',
      'sizes: 3 of 4 files checked, 3 files/s\n',
      'portal returns at most 100 datasets per page; continuing with --rows 100\n',
    ]);
  });
});
