import { describe, expect, it } from 'vitest';
import type { TransferItem } from './client.js';
import { chunkBytes, createIntake } from './transfers.js';

const KIB = 1024;
const MIB = 1024 * KIB;

describe('chunk sizes', () => {
  it.each([
    ['4 MiB before any rate is measured', undefined, 64 * MIB, 1024 * MIB, 4 * MIB],
    ['no more than max_chunk_bytes at first', undefined, 1 * MIB, 1024 * MIB, 1 * MIB],
    ['5 s at the measured rate', 10 * MIB, 64 * MIB, 1024 * MIB, 50 * MIB],
    ['no more than max_chunk_bytes on a fast uplink', 100 * MIB, 64 * MIB, 1024 * MIB, 64 * MIB],
    ['at least 256 KiB on a slow uplink', 1 * KIB, 64 * MIB, 1024 * MIB, 256 * KIB],
    ['max_chunk_bytes wins over the 256 KiB floor', 1 * KIB, 100 * KIB, 1024 * MIB, 100 * KIB],
    ['never more than what is left', 10 * MIB, 64 * MIB, 1000, 1000],
    ['whole bytes', 1234.5678 * KIB, 64 * MIB, 1024 * MIB, Math.floor(1234.5678 * KIB * 5)],
  ])('%s', (_name, rate, max, remaining, expected) => {
    expect(chunkBytes(rate, max, remaining)).toBe(expected);
  });
});

function transfer(id: number): TransferItem {
  return {
    id,
    asset_id: `asset-${id}`,
    purpose: 'restore',
    offset: 0,
    length: 10,
    size: 10,
    sha256: 'a'.repeat(64),
    url: `/api/transfers/${id}`,
    max_chunk_bytes: 64 * MIB,
    deadline: '2026-12-07T01:02:03.000Z',
  };
}

describe('taking offered transfers', () => {
  it('takes each id once while it is in hand, from the long-poll and heartbeats alike', () => {
    const intake = createIntake(() => 0);
    expect(intake.take([transfer(1), transfer(2), transfer(1)]).map((item) => item.id)).toEqual([1, 2]);
    expect(intake.take([transfer(2), transfer(3)]).map((item) => item.id)).toEqual([3]);
  });

  it('holds back one that comes back after it ended here: 5 s, doubling per return, up to 5 min', () => {
    let now = 0;
    const intake = createIntake(() => now);
    const returnsAfter = (): number => {
      intake.release(1);
      const endedAt = now;
      while (intake.take([transfer(1)]).length === 0) now += 1000;
      return now - endedAt;
    };
    intake.take([transfer(1)]);
    expect([returnsAfter(), returnsAfter(), returnsAfter()]).toEqual([5_000, 10_000, 20_000]);
    for (let times = 0; times < 10; times += 1) returnsAfter();
    expect(returnsAfter()).toBe(300_000);
  });
});
