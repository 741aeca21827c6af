import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCopyHasher } from '../lib/merkle.js';
import type { AllocationRecord } from './client.js';
import { checkCopy } from './copy-check.js';
import { assessCopiesAtStart } from './scrub.js';
import { openStore, type Store } from './storage.js';

let dataDirectory: string;

beforeEach(async () => {
  dataDirectory = await fs.mkdtemp(path.join(os.tmpdir(), 'copy-check-'));
});

afterEach(async () => {
  await fs.rm(dataDirectory, { recursive: true, force: true });
});

const sha256 = (content: string) => crypto.createHash('sha256').update(content).digest('hex');

async function keep(store: Store, assetId: string, content: string) {
  const partial = store.partialPath(assetId);
  await fs.writeFile(partial, content);
  const hasher = createCopyHasher();
  hasher.update(Buffer.from(content));
  return store.commit({
    assetId,
    fileName: 'data.nc',
    partial,
    sha256: sha256(content),
    bytes: Buffer.byteLength(content),
    merkleRoot: hasher.digest().merkleRoot,
  });
}

/** A completed allocation of this node, as `GET /allocations?state=completed` lists it (the fields the check reads). */
function completed(assetId: string, content: string | null): Pick<AllocationRecord, 'asset_id' | 'sha256' | 'bytes'> {
  return { asset_id: assetId, bytes: content === null ? null : Buffer.byteLength(content), sha256: content === null ? null : sha256(content) };
}

// A whole second, so that the mtime set is the mtime read back to the millisecond.
const PROVED_AT = 1_700_000_000;

describe('checking a copy', () => {
  it('trusts a file with the size and mtime recorded, and re-hashes one whose mtime changed', async () => {
    const store = await openStore(dataDirectory);
    const sst = await keep(store, 'sst', 'sea surface');
    expect(await checkCopy(store, 'sst', { sha256: sst.sha256, bytes: sst.bytes }, 'if-changed')).toEqual({ ok: true, record: sst });

    // Touched: re-hashed, found intact, and its new mtime recorded.
    await fs.utimes(sst.path, PROVED_AT, PROVED_AT);
    expect(await checkCopy(store, 'sst', undefined, 'if-changed')).toMatchObject({ ok: true, record: { mtimeMs: PROVED_AT * 1000 } });

    // Rewritten in place with the mtime put back: only a full re-hash sees it.
    await fs.writeFile(sst.path, 'SEA SURFACE');
    await fs.utimes(sst.path, PROVED_AT, PROVED_AT);
    expect(await checkCopy(store, 'sst', undefined, 'never')).toMatchObject({ ok: true });
    expect(await checkCopy(store, 'sst', undefined, 'if-changed')).toMatchObject({ ok: true });
    expect(await checkCopy(store, 'sst', undefined, 'always')).toMatchObject({ ok: false, reason: 'corrupt', bad: { assetId: 'sst' } });
  });

  it('re-hashes a copy recorded without an mtime, and one rewritten with a new mtime is corrupt', async () => {
    const store = await openStore(dataDirectory);
    const sst = await keep(store, 'sst', 'sea surface');
    await fs.writeFile(sst.path, 'SEA SURFACE');
    expect(await checkCopy(store, 'sst', undefined, 'never')).toMatchObject({ ok: true });
    expect(await checkCopy(store, 'sst', undefined, 'if-changed')).toMatchObject({ ok: false, reason: 'corrupt', bad: sst });
  });

  it('calls a copy missing when it is not in the manifest, its file is gone, or its size differs; only a kept one is bad', async () => {
    const store = await openStore(dataDirectory);
    const gone = await keep(store, 'gone', 'sea ice');
    const short = await keep(store, 'short', 'sea surface');
    await fs.rm(gone.path);
    await fs.truncate(short.path, 3);

    expect(await checkCopy(store, 'never-kept', undefined, 'always')).toEqual({ ok: false, reason: 'missing', detail: "not in this node's manifest" });
    expect(await checkCopy(store, 'gone', undefined, 'never')).toMatchObject({ ok: false, reason: 'missing', bad: gone });
    expect(await checkCopy(store, 'short', undefined, 'if-changed')).toMatchObject({
      ok: false,
      reason: 'missing',
      detail: 'its file holds 3 bytes, not the 11 recorded',
      bad: short,
    });
  });

  it('does not serve another version than the one the control plane counts, nor calls it bad', async () => {
    const store = await openStore(dataDirectory);
    await keep(store, 'sst', 'sea surface, second version');
    const check = await checkCopy(store, 'sst', { sha256: sha256('sea surface'), bytes: 11 }, 'never');
    expect(check).toMatchObject({ ok: false, reason: 'missing', detail: expect.stringMatching(/another version/) });
    expect(check).not.toHaveProperty('bad');
  });

  it.skipIf(process.getuid?.() === 0)('calls a file it may not read unreadable, not bad', async () => {
    const store = await openStore(dataDirectory);
    const sst = await keep(store, 'sst', 'sea surface');
    await fs.chmod(sst.path, 0o000);
    try {
      expect(await checkCopy(store, 'sst', undefined, 'always')).toEqual({ ok: false, reason: 'unreadable', detail: 'its file cannot be read (EACCES)' });
    } finally {
      await fs.chmod(sst.path, 0o600);
    }
  });
});

describe('the check at start', () => {
  it('finds present copies checked and the rest missing, and forgets the bad ones', async () => {
    const store = await openStore(dataDirectory);
    await keep(store, 'sst', 'sea surface');
    const ice = await keep(store, 'ice', 'sea ice');
    const wind = await keep(store, 'wind', 'wind speed');
    const other = await keep(store, 'other', 'second version');
    await fs.rm(ice.path);
    await fs.truncate(wind.path, 1);
    // Corrupt with its size intact: the start reads nothing; the scrub finds it.
    await fs.writeFile((await keep(store, 'rot', 'bit rot')).path, 'BIT ROT');

    const logged: string[] = [];
    const found = await assessCopiesAtStart(
      store,
      [
        completed('sst', 'sea surface'),
        completed('ice', 'sea ice'),
        completed('wind', 'wind speed'),
        completed('other', 'first version'),
        completed('never-kept', 'anything'),
        completed('rot', 'bit rot'),
        completed('unknown-checksum', null),
      ],
      (message) => logged.push(message),
    );

    expect(found.checked.sort()).toEqual(['rot', 'sst']);
    expect(found.lost.map((lost) => [lost.asset_id, lost.reason])).toEqual([
      ['ice', 'missing'],
      ['wind', 'missing'],
      ['other', 'missing'],
      ['never-kept', 'missing'],
      ['unknown-checksum', 'missing'],
    ]);
    expect(
      store
        .copies()
        .map((record) => record.assetId)
        .sort(),
    ).toEqual(['other', 'rot', 'sst']);
    await expect(fs.access(wind.path)).rejects.toThrow();
    expect(await fs.readFile(other.path, 'utf8')).toBe('second version');
    expect(logged).toEqual([]);
  });

  it('leaves no phantom copy after DATA_DIRECTORY was wiped: everything the control plane counts is lost', async () => {
    const store = await openStore(dataDirectory);
    const found = await assessCopiesAtStart(store, [completed('sst', 'sea surface'), completed('ice', 'sea ice')], () => undefined);
    expect(found).toEqual({
      checked: [],
      lost: [
        { asset_id: 'sst', reason: 'missing', detail: "not in this node's manifest" },
        { asset_id: 'ice', reason: 'missing', detail: "not in this node's manifest" },
      ],
    });
  });
});
