import { describe, expect, it } from 'vitest';
import { createFetchDisplay, describeTransfer } from './fetch-progress.js';

function fakeOutput(isTTY: boolean) {
  const written: string[] = [];
  return { output: { isTTY, write: (text: string) => written.push(text) } as unknown as NodeJS.WriteStream, written };
}

describe('the fetch display', () => {
  it('describes bytes, rate and ETA, with a bar when the total is known', () => {
    expect(describeTransfer('a.nc', 512, 1024, 256)).toBe('[############------------]  50% 512 B / 1.0 KiB · 256 B/s · ETA 2s  a.nc');
    expect(describeTransfer('a.nc', 3 * 1024 ** 3, null, 0)).toBe('3.0 GiB · 0 B/s · ETA —  a.nc');
  });

  it('redraws one bar in place on a terminal, and prints nothing of the server unprintable', () => {
    let now = 0;
    const { output, written } = fakeOutput(true);
    const display = createFetchDisplay(output, () => now);
    const events = display.download('evil\u001b]0;title\u0007.bin');
    events.begin(1000, 0, 'the source example.org');
    [now] = [1000];
    events.progress(500);
    now += 50;
    events.progress(600);
    expect(written).toEqual([
      'evil]0;title.bin: downloading (1000 B) from the source example.org\n',
      '[############------------]  50% 500 B / 1000 B · 500 B/s · ETA 1s  evil]0;title.bin\n',
    ]);
    events.notice('connection cut\u001b[2J');
    display.clear();
    expect(written.slice(2)).toEqual(['\x1b[1A\x1b[J', 'evil]0;title.bin: connection cut[2J\n']);
  });

  it('prints plain lines elsewhere: the start, then at most every 10 s', () => {
    let now = 0;
    const { output, written } = fakeOutput(false);
    const events = createFetchDisplay(output, () => now).download('a.nc');
    events.begin(null, 100, 'the control plane');
    for (now = 1000; now <= 21_000; now += 1000) events.progress(now);
    expect(written).toEqual(['a.nc: resuming at 100 B from the control plane\n', '9.8 KiB · 990 B/s · ETA —  a.nc\n', '19.5 KiB · 995 B/s · ETA —  a.nc\n']);
  });
});
