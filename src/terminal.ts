/**
 * Live progress on a terminal, shared by `dispatcher agent` and `dispatcher import`: a block of
 * lines redrawn in place (cursor up, erase down) below the permanent lines printed so far.
 */
export interface LiveBlock {
  /** Replaces the block with these lines. */
  draw(lines: string[]): void;
  /** Erases the block. */
  clear(): void;
  /** Erases the block and prints a permanent line; the block comes back at the next draw. */
  print(text: string): void;
  /** Leaves the block on screen as permanent lines: the next draw starts below it. */
  keep(): void;
}

export function createLiveBlock(output: Pick<NodeJS.WritableStream, 'write'>): LiveBlock {
  let drawn = 0;
  const clear = () => {
    if (drawn > 0) output.write(`\x1b[${drawn}A\x1b[J`);
    drawn = 0;
  };
  return {
    draw(lines) {
      clear();
      output.write(`${lines.join('\n')}\n`);
      drawn = lines.length;
    },
    clear,
    print(text) {
      clear();
      output.write(`${text}\n`);
    },
    keep() {
      drawn = 0;
    },
  };
}

/** Seconds left as `42s`, `3m07s` or `2h05m`; `—` when unknown (no rate yet). */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

/** `[#########-----------]  45%` for a fraction done. */
export function formatBar(fraction: number, width = 24): string {
  const done = Math.max(0, Math.min(1, fraction));
  const filled = Math.round(done * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.floor(done * 100)).padStart(3)}%`;
}
