import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BLOCK_BYTES, blockCount, PIECE_BYTES, verifyBlock } from '../lib/merkle.js';
import { createAuditIntake, startAudits, type AuditLoop } from './audits.js';
import { createClient, type AuditItem } from './client.js';
import { download } from './download.js';
import { pieceLayerPath } from './piece-layer-file.js';
import type { Progress } from './progress.js';
import { openStore, type CopyRecord, type Store } from './storage.js';

const SIZE = 3 * PIECE_BYTES + 5;
const content = crypto.randomBytes(SIZE);

interface Posted {
  url: string;
  authorization: string | undefined;
  body: Record<string, unknown>;
}

let dataDirectory: string;
let server: http.Server;
let origin: string;
let store: Store;
let posted: Posted[];
/** Status codes the control plane answers the next POSTs with, then 200. */
let refusals: number[];
let logs: string[];
let controller: AbortController;
let loop: AuditLoop;

beforeEach(async () => {
  dataDirectory = await fsp.mkdtemp(path.join(os.tmpdir(), 'audits-'));
  [posted, refusals, logs] = [[], [], []];
  server = http.createServer((request, response) => {
    if (request.method === 'GET') return response.writeHead(200, { 'content-length': content.length }).end(content);
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      posted.push({ url: request.url ?? '', authorization: request.headers.authorization, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      const status = refusals.shift() ?? 200;
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(status === 200 ? { status: 'passed' } : { code: 'REFUSED', detail: 'no' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  store = await openStore(dataDirectory);
  controller = new AbortController();
  const progress: Progress = { log: (message) => logs.push(message), started: () => undefined, finished: () => undefined, watch: () => () => undefined };
  loop = startAudits({ client: createClient(origin, () => 'node-token'), store, nodeId: 1, progress, signal: controller.signal });
});

afterEach(async () => {
  controller.abort();
  await loop.stopped;
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await fsp.rm(dataDirectory, { recursive: true, force: true });
});

/** Downloads `content` from the local source and keeps it, as a job does: the root is the one computed while downloading. */
async function keepDownloaded(assetId: string): Promise<{ record: CopyRecord; merkleRoot: string }> {
  const partial = store.partialPath(assetId);
  const outcome = await download({
    url: `${origin}/${assetId}.nc`,
    partial,
    expectedBytes: SIZE,
    expectedSha256: null,
    maxBytes: SIZE,
    reserveBytes: 0,
    freeBytes: async () => 2 ** 40,
    signal: controller.signal,
    onProgress: () => undefined,
  });
  if (!outcome.ok) throw new Error(outcome.reason);
  const record = await store.commit({ assetId, fileName: 'data.nc', partial, sha256: outcome.sha256, bytes: outcome.bytes, merkleRoot: outcome.merkleRoot });
  return { record, merkleRoot: outcome.merkleRoot };
}

let nextId = 1;
function audit(fields: Partial<AuditItem> & Pick<AuditItem, 'asset_id' | 'kind'>): AuditItem {
  const id = nextId++;
  return { id, nonce: null, ranges: [], block: null, deadline: new Date(Date.now() + 60_000).toISOString(), url: `/api/audits/${id}`, ...fields };
}

async function answersTo(items: AuditItem[]): Promise<Record<string, unknown>[]> {
  loop.offer(items);
  await loop.idle();
  return items.map((item) => {
    const answers = posted.filter((post) => post.url === item.url);
    expect(answers, `answers to audit ${item.id}`).toHaveLength(1);
    return (answers[0] as Posted).body;
  });
}

const withNonce = (nonce: string, bytes: Buffer) => crypto.createHash('sha256').update(Buffer.from(nonce, 'hex')).update(bytes).digest('hex');

describe('answering audits', () => {
  it('hashes each range of the copy after the nonce, and sends it with the node token', async () => {
    await keepDownloaded('sst');
    const nonce = crypto.randomBytes(16).toString('hex');
    const ranges = [
      { offset: 0, length: 10 },
      { offset: BLOCK_BYTES - 3, length: 10 },
      { offset: PIECE_BYTES - 1, length: 2 * PIECE_BYTES },
      { offset: SIZE - 5, length: 5 },
      { offset: SIZE, length: 0 },
    ];
    const [answer] = await answersTo([audit({ asset_id: 'sst', kind: 'ranges', nonce, ranges })]);
    expect(answer).toEqual({ hashes: ranges.map(({ offset, length }) => withNonce(nonce, content.subarray(offset, offset + length))) });
    expect(posted[0]?.authorization).toBe('Bearer node-token');
  });

  it('returns a block with a Merkle path that verifies against the root computed at download', async () => {
    const { merkleRoot } = await keepDownloaded('sst');
    const indexes = [0, 63, 64, 100, blockCount(SIZE) - 1];
    const answers = await answersTo(indexes.map((block) => audit({ asset_id: 'sst', kind: 'block', block })));
    for (const [at, answer] of answers.entries()) {
      const index = indexes[at] as number;
      const { block, proof } = answer as { block: string; proof: string[] };
      expect(Buffer.from(block, 'base64').equals(content.subarray(index * BLOCK_BYTES, (index + 1) * BLOCK_BYTES))).toBe(true);
      expect(verifyBlock({ root: merkleRoot, size: SIZE, index, block: Buffer.from(block, 'base64'), proof }), `block ${index}`).toBe(true);
    }
  });

  it('rebuilds a missing piece layer from the copy before proving a block', async () => {
    const { record, merkleRoot } = await keepDownloaded('sst');
    await fsp.rm(pieceLayerPath(record.path));
    const [answer] = await answersTo([audit({ asset_id: 'sst', kind: 'block', block: 130 })]);
    const { block, proof } = answer as { block: string; proof: string[] };
    expect(verifyBlock({ root: merkleRoot, size: SIZE, index: 130, block: Buffer.from(block, 'base64'), proof })).toBe(true);
    await fsp.access(pieceLayerPath(record.path));
  });

  it('answers missing for a copy not kept, gone from disk, or changed, and forgets a bad one', async () => {
    const { record } = await keepDownloaded('sst');
    await keepDownloaded('ice');
    const ice = store.copyOf('ice') as CopyRecord;
    const changed = await fsp.open(ice.path, 'r+');
    await changed.write(Buffer.from([(content[PIECE_BYTES + 7] as number) ^ 1]), 0, 1, PIECE_BYTES + 7);
    await changed.close();
    await fsp.rm(record.path);

    const answers = await answersTo([
      audit({ asset_id: 'never-kept', kind: 'ranges', nonce: 'ab', ranges: [{ offset: 0, length: 1 }] }),
      audit({ asset_id: 'sst', kind: 'block', block: 0 }),
      audit({ asset_id: 'ice', kind: 'block', block: 64 }),
    ]);
    expect(answers).toEqual([{ missing: true }, { missing: true }, { missing: true }]);
    expect(store.copyOf('sst')).toBeUndefined();
    expect(store.copyOf('ice')).toBeUndefined();
    expect(logs.join('\n')).toMatch(/audit \d+ \(block of ice\): the piece at byte 1048576 no longer hashes to its Merkle root/);
  });

  it('answers missing, keeping the copy, for bytes or a block past its end: it is not the copy audited', async () => {
    await keepDownloaded('sst');
    const answers = await answersTo([
      audit({ asset_id: 'sst', kind: 'ranges', nonce: 'ab', ranges: [{ offset: SIZE - 1, length: 2 }] }),
      audit({ asset_id: 'sst', kind: 'block', block: blockCount(SIZE) }),
    ]);
    expect(answers).toEqual([{ missing: true }, { missing: true }]);
    expect(store.copyOf('sst')).toBeDefined();
  });

  it('takes an audit once, however often it is offered, while running or after it was answered', async () => {
    await keepDownloaded('sst');
    const item = audit({ asset_id: 'sst', kind: 'block', block: 3 });
    loop.offer([item, item]);
    loop.offer([item]);
    await loop.idle();
    loop.offer([item]);
    await loop.idle();
    expect(posted.map((post) => post.url)).toEqual([item.url]);
  });

  it('sends an answer again while the control plane is unavailable, but not one it refused', async () => {
    await keepDownloaded('sst');
    refusals = [503];
    const retried = audit({ asset_id: 'sst', kind: 'block', block: 1 });
    loop.offer([retried]);
    await loop.idle();
    expect(posted.filter((post) => post.url === retried.url)).toHaveLength(2);

    refusals = [409];
    const refused = audit({ asset_id: 'sst', kind: 'block', block: 2 });
    loop.offer([refused]);
    await loop.idle();
    expect(posted.filter((post) => post.url === refused.url)).toHaveLength(1);
    expect(logs.join('\n')).toMatch(/audit \d+ \(block of sst\): not answered: 409 REFUSED: no/);
  });

  it('stops asking again once the deadline has passed', async () => {
    await keepDownloaded('sst');
    refusals = [503, 503];
    const item = audit({ asset_id: 'sst', kind: 'block', block: 0, deadline: new Date(Date.now() + 400).toISOString() });
    loop.offer([item]);
    await loop.idle();
    expect(posted).toHaveLength(1);
    expect(logs.join('\n')).toMatch(/not answered: its deadline .* passed before it was answered/);
  });

  it('does not answer an audit whose deadline has passed', async () => {
    await keepDownloaded('sst');
    loop.offer([audit({ asset_id: 'sst', kind: 'block', block: 0, deadline: new Date(Date.now() - 1000).toISOString() })]);
    await loop.idle();
    expect(posted).toEqual([]);
    expect(logs.join('\n')).toMatch(/deadline .* has passed; not answered/);
  });
});

describe('the audit intake', () => {
  it('forgets an audit an hour past its deadline', () => {
    let now = Date.parse('2030-01-01T00:00:00Z');
    const intake = createAuditIntake(() => now);
    const item = audit({ asset_id: 'sst', kind: 'block', block: 0, deadline: new Date(now + 60_000).toISOString() });
    expect(intake.take([item, item])).toEqual([item]);
    expect(intake.take([item])).toEqual([]);
    intake.end(item);
    now += 60_000 + 3_600_000 - 1;
    expect(intake.take([item])).toEqual([]);
    now += 1;
    expect(intake.take([item])).toEqual([item]);
  });
});
