import { describe, expect, it } from 'vitest';
import { upcomingWindows, windowAt, type Window, type WindowSpec } from './windows.js';

const at = (iso: string) => Date.parse(iso);

/** The windows one at a time, each searched from the previous one's end: the rule upcomingWindows walks faster. */
function oneByOne(spec: WindowSpec, from: number, count: number): Window[] {
  const windows: Window[] = [];
  for (let next = windowAt(spec, from); next && windows.length < count; next = windowAt(spec, next.end)) windows.push(next);
  return windows;
}

describe('upcoming windows', () => {
  const crons: [string, string, string][] = [
    ['0 * * * *', '0 * * * *', 'UTC'],
    ['*/7 * * * *', '*/5 * * * *', 'UTC'],
    ['0 22 * * *', '0 6 * * *', 'Europe/Berlin'],
    ['30 2 * * *', '30 4 * * *', 'Europe/Berlin'],
    ['0 20 * * 1-5', '0 6 * * *', 'America/New_York'],
    ['0 0 1 * *', '0 1 * 1-2 *', 'UTC'],
    ['15 10 * * 0', '45 9 * * *', 'Asia/Kolkata'],
  ];
  const froms = ['2026-03-27T12:00:00Z', '2026-03-29T01:00:00Z', '2026-10-25T00:59:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:30:00Z'];

  it('are the windows found one by one, across daylight-saving changes, from inside a window and from before the start', () => {
    for (const [cronStart, cronStop, timezone] of crons) {
      for (const from of froms) {
        const spec: WindowSpec = { startTime: at('2026-01-01T00:00:00Z'), endTime: at('2027-06-01T00:00:00Z'), recurrence: { cronStart, cronStop, timezone } };
        const label = `${cronStart} / ${cronStop} in ${timezone} from ${from}`;
        expect(upcomingWindows(spec, at(from), 30), label).toEqual(oneByOne(spec, at(from), 30));
        expect(upcomingWindows(spec, at(from) - 86_400_000 * 400, 3), label).toEqual(oneByOne(spec, at(from) - 86_400_000 * 400, 3));
      }
    }
  });

  it('end with the schedule, and a plain schedule has its one window', () => {
    const hourly: WindowSpec = {
      startTime: at('2026-01-01T00:00:00Z'),
      endTime: at('2026-01-01T03:30:00Z'),
      recurrence: { cronStart: '0 * * * *', cronStop: '0 * * * *', timezone: 'UTC' },
    };
    expect(upcomingWindows(hourly, at('2026-01-01T00:10:00Z'), 50).map((window) => new Date(window.end).toISOString())).toEqual([
      '2026-01-01T01:00:00.000Z',
      '2026-01-01T02:00:00.000Z',
      '2026-01-01T03:00:00.000Z',
      '2026-01-01T03:30:00.000Z',
    ]);
    expect(upcomingWindows(hourly, at('2026-01-01T03:30:00Z'), 50)).toEqual([]);
    const plain: WindowSpec = { startTime: at('2026-01-01T00:00:00Z'), endTime: at('2026-01-02T00:00:00Z'), recurrence: null };
    expect(upcomingWindows(plain, at('2025-12-01T00:00:00Z'), 50)).toEqual([{ start: plain.startTime, end: plain.endTime }]);
    expect(upcomingWindows(plain, at('2026-01-01T12:00:00Z'), 0)).toEqual([]);
  });
});
