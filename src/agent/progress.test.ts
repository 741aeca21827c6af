import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Job } from './job.js';
import { createProgress } from './progress.js';

const MIB = 1024 * 1024;

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  return { stream: { isTTY, write: (text: string) => writes.push(text) } as unknown as NodeJS.WriteStream, writes };
}

const job = (id: string, size: number | null): Job => ({
  task: { id, name: id, url: `http://x/${id}`, restoreUrl: null, sizeBytes: size, sha256: null, reservedBytes: size ?? 0 },
  bytesDone: 0,
  controller: new AbortController(),
});

describe('agent progress', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('redraws one line per download and a total on a terminal: percent, bytes, rate, ETA', () => {
    vi.useFakeTimers();
    const { stream, writes } = fakeStream(true);
    const progress = createProgress(stream);
    const jobs = [job('sst', 100 * MIB), job('ice', null)];
    for (const each of jobs) progress.started(each);
    const stop = progress.watch(() => jobs);
    jobs[0]!.bytesDone = 10 * MIB;
    vi.advanceTimersByTime(1000);
    jobs[0]!.bytesDone = 20 * MIB;
    jobs[1]!.bytesDone = 5 * MIB;
    vi.advanceTimersByTime(1000);
    const screen = writes.at(-1)!;
    expect(screen).toContain(' 20.0% 20.0 MiB / 100.0 MiB 10.0 MiB/s ETA 8s  sst');
    expect(screen).toContain('5.0 MiB 5.0 MiB/s ETA —  ice');
    expect(screen).toMatch(/total: 2 download\(s\), 25\.0 MiB done, 15\.0 MiB\/s/);
    // The block is erased before the next one is drawn.
    expect(writes.some((text) => text.includes('\x1b[3A'))).toBe(true);
    stop();
  });

  it('writes plain timestamped lines elsewhere, with a periodic summary', () => {
    vi.useFakeTimers();
    const { stream, writes } = fakeStream(false);
    const progress = createProgress(stream, 30_000);
    const jobs = [job('sst', 100 * MIB)];
    progress.started(jobs[0]!);
    const stop = progress.watch(() => jobs);
    jobs[0]!.bytesDone = 30 * MIB;
    vi.advanceTimersByTime(30_000);
    progress.finished(jobs[0]!, 'done');
    stop();
    expect(writes).toHaveLength(3);
    expect(writes[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z downloading sst \(100\.0 MiB\) from http:\/\/x\/sst\n$/);
    expect(writes[1]).toContain('total: 1 download(s), 30.0 MiB done');
    expect(writes[2]).toMatch(/sst: done\n$/);
    expect(writes.join('')).not.toContain('\x1b[');
  });
});
