import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createClient, type TransferItem } from './client.js';
import { chunkBytes, createIntake, readRange, readSlots } from './transfers.js';

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

/** A receiver slower than the sender: it stops reading for a moment after every 256 KiB, so the sender's socket keeps filling up. */
async function startStallingReceiver(): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((request, response) => {
    const hash = crypto.createHash('sha256');
    let sinceStall = 0;
    let received = 0;
    request.on('data', (piece: Buffer) => {
      hash.update(piece);
      received += piece.length;
      sinceStall += piece.length;
      if (sinceStall < 256 * KIB) return;
      sinceStall = 0;
      request.pause();
      void sleep(2).then(() => request.resume());
    });
    request.on('end', () => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ received, sha256: hash.digest('hex') })));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('reading a copy as it is sent', () => {
  it('sends every byte intact through the real client to a receiver that keeps stalling, its few read buffers reused throughout', async () => {
    const directory = await fsp.mkdtemp(path.join(os.tmpdir(), 'dispatcher-send-'));
    const file = path.join(directory, 'copy.bin');
    const content = crypto.randomBytes(20 * MIB + 12_345);
    fs.writeFileSync(file, content);
    const receiver = await startStallingReceiver();
    const handle = await fsp.open(file, 'r');
    try {
      const client = createClient(receiver.url, () => 'node-token');
      const slots = readSlots(content.length);
      // Two chunks through the same slots, the second starting off a piece boundary, as a transfer sends them.
      for (const range of [
        { start: 0, end: 12 * MIB - 1, size: content.length },
        { start: 12 * MIB, end: content.length - 1, size: content.length },
      ]) {
        const answer = (await client.sendChunk('/put', range, readRange(handle, slots, range), new AbortController().signal)) as unknown as {
          received: number;
          sha256: string;
        };
        const expected = content.subarray(range.start, range.end + 1);
        expect(answer).toEqual({ received: expected.length, sha256: crypto.createHash('sha256').update(expected).digest('hex') });
      }
    } finally {
      await handle.close();
      await receiver.close();
      await fsp.rm(directory, { recursive: true, force: true });
    }
  });
});
