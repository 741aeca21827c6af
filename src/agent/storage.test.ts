import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCopyHasher } from '../lib/merkle.js';
import { pieceLayerPath, readPieceLayer } from './piece-layer-file.js';
import { fileNameFor, legacyName, openStore, type Store } from './storage.js';

let dataDirectory: string;

beforeEach(async () => {
  dataDirectory = await fs.mkdtemp(path.join(os.tmpdir(), 'storage-'));
});

afterEach(async () => {
  await fs.rm(dataDirectory, { recursive: true, force: true });
});

const sha256 = (content: string) => crypto.createHash('sha256').update(content).digest('hex');
const digestOf = (content: string) => {
  const hasher = createCopyHasher();
  hasher.update(Buffer.from(content));
  return hasher.digest();
};

/** Writes `content` where a download for `assetId` would leave it, with its resume metadata. */
async function writePartial(store: Store, assetId: string, content: string): Promise<string> {
  const partial = store.partialPath(assetId);
  await fs.writeFile(partial, content);
  await fs.writeFile(`${partial}.json`, JSON.stringify({ url: 'http://example.org/x', validator: null }));
  return partial;
}

async function commitContent(store: Store, assetId: string, content: string, fileName = 'data.nc') {
  const partial = await writePartial(store, assetId, content);
  return store.commit({ assetId, fileName, partial, sha256: sha256(content), bytes: Buffer.byteLength(content), merkleRoot: digestOf(content).merkleRoot });
}

const isInside = (file: string, directory: string) => !path.relative(directory, file).startsWith('..') && !path.isAbsolute(path.relative(directory, file));
const keyDirectory = (store: Store, assetId: string) => path.join(dataDirectory, 'assets', path.basename(store.partialPath(assetId), '.part'));
const manifestLines = async () => (await fs.readFile(path.join(dataDirectory, 'manifest.jsonl'), 'utf8')).split('\n').filter(Boolean);

async function listFiles(directory: string): Promise<string[]> {
  const entries = await fs.readdir(directory, { withFileTypes: true, recursive: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

describe('storage', () => {
  const hostileIds = ['a:b', 'a/b', 'a b', 'ａ:b', '..', '../../etc/passwd', 'x'.repeat(300), `${'x'.repeat(200)}y`, 'dup/1', 'dup:1', '', '\u202e\x1b[2J.'];

  it('gives distinct ids distinct partials and copies, all inside DATA_DIRECTORY, whatever the id or name', async () => {
    const store = await openStore(dataDirectory);
    const partials = new Set(hostileIds.map((id) => store.partialPath(id)));
    expect(partials.size).toBe(hostileIds.length);
    for (const partial of partials) expect(path.dirname(partial)).toBe(path.join(dataDirectory, 'partial'));

    const records = [];
    // The asset's name is hostile too: the id doubles as its name.
    for (const id of hostileIds) records.push(await commitContent(store, id, `content of ${JSON.stringify(id)}`, fileNameFor(id, 'http://example.org/')));
    expect(new Set(records.map((record) => record.path)).size).toBe(hostileIds.length);
    for (const [index, id] of hostileIds.entries()) {
      const record = records[index]!;
      expect(isInside(record.path, path.join(dataDirectory, 'assets'))).toBe(true);
      expect(path.basename(record.path)).not.toMatch(/^\./);
      expect(await fs.readFile(record.path, 'utf8')).toBe(`content of ${JSON.stringify(id)}`);
      expect(store.copyOf(id)?.path).toBe(record.path);
    }
    for (const file of await listFiles(dataDirectory)) expect(isInside(file, dataDirectory)).toBe(true);
    for (const directory of ['assets', 'partial', path.relative(dataDirectory, path.dirname(records[0]!.path))]) {
      expect((await fs.stat(path.join(dataDirectory, directory))).mode & 0o777).toBe(0o700);
    }
    expect(await fs.readdir(path.join(dataDirectory, 'partial'))).toEqual([]);
  });

  it('names files after the asset, else the URL, never with a leading dot or a path', () => {
    expect(fileNameFor('sst 2024.nc', 'http://x/y')).toBe('sst_2024.nc');
    expect(fileNameFor('', 'http://x/path/ice.h5?sig=1')).toBe('ice.h5');
    expect(fileNameFor('', 'http://x/')).toBe('data');
    expect(fileNameFor('', 'not a url')).toBe('data');
    expect(fileNameFor('../.hidden', '')).toBe('_._.hidden');
    expect(fileNameFor('n'.repeat(500), '')).toHaveLength(120);
  });

  it('never overwrites: a name already taken makes the copy land beside it, and a new copy keeps the old one on disk', async () => {
    const store = await openStore(dataDirectory);
    const directory = keyDirectory(store, 'sst');
    await fs.mkdir(directory, { recursive: true });
    await fs.writeFile(path.join(directory, 'data.nc'), 'not ours');

    const first = await commitContent(store, 'sst', 'first');
    expect(first.path).toBe(path.join(directory, '1-data.nc'));
    const second = await commitContent(store, 'sst', 'second');
    expect(second.path).toBe(path.join(directory, '2-data.nc'));

    expect(await fs.readFile(path.join(directory, 'data.nc'), 'utf8')).toBe('not ours');
    expect(await fs.readFile(second.path, 'utf8')).toBe('second');
    expect(await fs.readFile(first.path, 'utf8')).toBe('first');
    expect(store.copyOf('sst')).toEqual(second);
    expect(await store.verify('sst')).toBe(true);
    await fs.writeFile(second.path, 'SECOND');
    expect(await store.verify('sst')).toBe(false);
  });

  it('refuses a file whose re-hash or size does not match, keeping nothing', async () => {
    const store = await openStore(dataDirectory);
    const partial = await writePartial(store, 'sst', 'actual bytes');
    const merkleRoot = digestOf('actual bytes').merkleRoot;
    await expect(store.commit({ assetId: 'sst', fileName: 'data.nc', partial, sha256: sha256('other bytes'), bytes: 12, merkleRoot })).rejects.toThrow(
      /refused/,
    );
    const sized = await writePartial(store, 'ice', 'actual bytes');
    await expect(store.commit({ assetId: 'ice', fileName: 'data.nc', partial: sized, sha256: sha256('actual bytes'), bytes: 999, merkleRoot })).rejects.toThrow(
      /refused/,
    );
    const rooted = await writePartial(store, 'sea', 'actual bytes');
    const otherRoot = digestOf('other bytes').merkleRoot;
    await expect(
      store.commit({ assetId: 'sea', fileName: 'data.nc', partial: rooted, sha256: sha256('actual bytes'), bytes: 12, merkleRoot: otherRoot }),
    ).rejects.toThrow(/refused/);

    expect(await listFiles(path.join(dataDirectory, 'assets'))).toEqual([]);
    expect(await fs.readdir(path.join(dataDirectory, 'partial'))).toEqual([]);
    expect(store.copies()).toEqual([]);
    expect(await manifestLines()).toEqual([]);
  });

  it('keeps the manifest across reopening, ignoring a torn last line with a warning', async () => {
    const store = await openStore(dataDirectory);
    const sst = await commitContent(store, 'sst', 'sea surface');
    const ice = await commitContent(store, 'ice', 'sea ice');
    expect((await openStore(dataDirectory)).copies()).toEqual([sst, ice]);

    await fs.appendFile(path.join(dataDirectory, 'manifest.jsonl'), '{"op":"copy","asset_id":"torn","pa');
    const warnings: string[] = [];
    const reopened = await openStore(dataDirectory, { onWarning: (message) => warnings.push(message) });
    expect(warnings).toEqual([expect.stringMatching(/torn last line/)]);
    expect(reopened.copies()).toEqual([sst, ice]);

    // The torn line was rewritten away, so the next append starts on a line of its own.
    const wind = await commitContent(reopened, 'wind', 'wind');
    expect((await openStore(dataDirectory)).copies()).toEqual([sst, ice, wind]);
    for (const line of await manifestLines()) expect(() => JSON.parse(line)).not.toThrow();
  });

  it('records a removal, and compacts it away at the next open', async () => {
    const store = await openStore(dataDirectory);
    const sst = await commitContent(store, 'sst', 'sea surface');
    const ice = await commitContent(store, 'ice', 'sea ice');
    await store.remove('sst');
    await store.remove('never-kept');

    await expect(fs.access(sst.path)).rejects.toThrow();
    expect(store.copyOf('sst')).toBeUndefined();
    expect((await manifestLines()).map((line) => (JSON.parse(line) as { op: string }).op)).toEqual(['copy', 'copy', 'remove']);

    const reopened = await openStore(dataDirectory);
    expect(reopened.copies()).toEqual([ice]);
    expect(await manifestLines()).toEqual([
      JSON.stringify({
        op: 'copy',
        asset_id: 'ice',
        path: path.relative(dataDirectory, ice.path),
        bytes: 7,
        sha256: sha256('sea ice'),
        merkle_root: digestOf('sea ice').merkleRoot,
        completed_at: ice.completedAt,
        mtime_ms: ice.mtimeMs,
      }),
    ]);
  });

  it("records the file's mtime at commit, and again when a re-hash proves a copy whose mtime changed", async () => {
    const store = await openStore(dataDirectory);
    const sst = await commitContent(store, 'sst', 'sea surface');
    expect(sst.mtimeMs).toBe((await fs.stat(sst.path)).mtimeMs);
    expect(JSON.parse((await manifestLines())[0]!)).toMatchObject({ mtime_ms: sst.mtimeMs });

    await fs.utimes(sst.path, 1_700_000_000, 1_700_000_000);
    expect(await store.verify('sst')).toBe(true);
    expect(store.copyOf('sst')).toEqual({ ...sst, mtimeMs: 1_700_000_000_000 });
    expect((await openStore(dataDirectory)).copyOf('sst')?.mtimeMs).toBe(1_700_000_000_000);

    // A copy that no longer matches keeps the mtime it was last proved with.
    await fs.writeFile(sst.path, 'SEA SURFACE');
    expect(await store.verify('sst')).toBe(false);
    expect(store.copyOf('sst')?.mtimeMs).toBe(1_700_000_000_000);
  });

  it('reads a manifest line without mtime_ms (written before it was recorded) as a copy without one', async () => {
    const store = await openStore(dataDirectory);
    const sst = await commitContent(store, 'sst', 'sea surface');
    const { mtime_ms: _dropped, ...older } = JSON.parse((await manifestLines())[0]!) as Record<string, unknown>;
    await fs.writeFile(path.join(dataDirectory, 'manifest.jsonl'), `${JSON.stringify(older)}\n`);
    const { mtimeMs: _mtime, ...withoutMtime } = sst;
    expect((await openStore(dataDirectory)).copyOf('sst')).toEqual(withoutMtime);
  });

  it('stops a verify when its signal aborts, rejecting instead of calling the copy bad', async () => {
    const store = await openStore(dataDirectory);
    await commitContent(store, 'sst', 'x'.repeat(1024 * 1024));
    const controller = new AbortController();
    const verifying = store.verify('sst', { signal: controller.signal, throttle: async () => controller.abort() });
    await expect(verifying).rejects.toThrow(/abort/i);
    expect(await store.verify('sst')).toBe(true);
  });

  it('cleans up partials of assets not kept, and empty folders', async () => {
    const store = await openStore(dataDirectory);
    const kept = await writePartial(store, 'running', 'half');
    const dropped = await writePartial(store, 'given-back', 'half');
    const copy = await commitContent(store, 'sst', 'sea surface');
    await commitContent(store, 'refused', 'bad');
    await store.remove('refused');

    expect(await store.cleanUp(new Set(['running']))).toEqual({ partials: 1, folders: 1 });
    expect(await fs.readFile(kept, 'utf8')).toBe('half');
    await fs.access(`${kept}.json`);
    await expect(fs.access(dropped)).rejects.toThrow();
    await expect(fs.access(`${dropped}.json`)).rejects.toThrow();
    expect(await fs.readFile(copy.path, 'utf8')).toBe('sea surface');
    expect(await fs.readdir(path.join(dataDirectory, 'assets'))).toEqual([path.basename(path.dirname(copy.path))]);
  });

  describe('the piece layer kept beside a copy', () => {
    const big = 'sea surface temperature '.repeat(100_000);

    it('is written at commit, readable by this account alone, and deleted with the copy', async () => {
      const store = await openStore(dataDirectory);
      const sst = await commitContent(store, 'sst', big);
      const { merkleRoot, pieceLayer } = digestOf(big);
      expect(sst.merkleRoot).toBe(merkleRoot);
      expect(pieceLayerPath(sst.path)).toBe(path.join(path.dirname(sst.path), '.data.nc.pieces'));
      expect((await fs.stat(pieceLayerPath(sst.path))).mode & 0o777).toBe(0o600);
      expect(await readPieceLayer(sst.path, sst)).toEqual({ merkleRoot, pieceLayer });
      expect(await store.pieceLayerOf('sst')).toEqual({ merkleRoot, pieceLayer });

      await store.remove('sst');
      expect(await fs.readdir(path.dirname(sst.path))).toEqual([]);
      expect(await store.pieceLayerOf('sst')).toBeNull();
    });

    it('is rebuilt from the copy when missing or damaged, and not from a copy that changed', async () => {
      const store = await openStore(dataDirectory);
      const sst = await commitContent(store, 'sst', big);
      const expected = { merkleRoot: digestOf(big).merkleRoot, pieceLayer: digestOf(big).pieceLayer };
      await fs.rm(pieceLayerPath(sst.path));
      expect(await store.pieceLayerOf('sst')).toEqual(expected);
      expect(await readPieceLayer(sst.path, sst)).toEqual(expected);

      const damaged = await fs.readFile(pieceLayerPath(sst.path));
      damaged[damaged.length - 1] = (damaged[damaged.length - 1] as number) ^ 1;
      await fs.writeFile(pieceLayerPath(sst.path), damaged);
      expect(await readPieceLayer(sst.path, sst)).toBeNull();
      expect(await store.verify('sst')).toBe(true);
      expect(await readPieceLayer(sst.path, sst)).toEqual(expected);

      await fs.rm(pieceLayerPath(sst.path));
      await fs.writeFile(sst.path, big.toUpperCase());
      expect(await store.pieceLayerOf('sst')).toBeNull();
      await expect(fs.access(pieceLayerPath(sst.path))).rejects.toThrow();
    });

    it('and the Merkle root are recorded by the first full read of a copy kept before roots were', async () => {
      const store = await openStore(dataDirectory);
      const sst = await commitContent(store, 'sst', 'sea surface');
      const { merkle_root: _root, ...older } = JSON.parse((await manifestLines())[0]!) as Record<string, unknown>;
      await fs.writeFile(path.join(dataDirectory, 'manifest.jsonl'), `${JSON.stringify(older)}\n`);
      await fs.rm(pieceLayerPath(sst.path));

      const reopened = await openStore(dataDirectory);
      expect(reopened.copyOf('sst')?.merkleRoot).toBeUndefined();
      expect(await reopened.verify('sst')).toBe(true);
      expect(reopened.copyOf('sst')).toEqual(sst);
      expect(await readPieceLayer(sst.path, sst)).toMatchObject({ merkleRoot: sst.merkleRoot });
      expect((await openStore(dataDirectory)).copyOf('sst')).toEqual(sst);
    });

    it('of a copy missing from disk is deleted when the manifest forgets the copy', async () => {
      const store = await openStore(dataDirectory);
      const sst = await commitContent(store, 'sst', 'sea surface');
      await fs.rm(sst.path);
      await openStore(dataDirectory);
      expect(await fs.readdir(path.dirname(sst.path))).toEqual([]);
    });
  });

  describe('adopting the old layout', () => {
    async function writeLegacy(relative: string, content: string): Promise<string> {
      const file = path.join(dataDirectory, relative);
      await fs.mkdir(path.dirname(file), { recursive: true });
      await fs.writeFile(file, content);
      return file;
    }

    it('adopts matching legacy files, reports the rest, and removes the leftovers', async () => {
      // noaa:sst-2024 and noaa/sst-2024 shared one legacy file: the second download replaced the first.
      const shared = await writeLegacy(`assets/${legacyName('noaa:sst-2024')}/sst.nc`, 'second sst');
      const both = await writeLegacy(`assets/${legacyName('dup/1')}/same.nc`, 'same bytes');
      const ice = await writeLegacy('assets/ice/ice.h5', 'sea ice');
      const corrupt = await writeLegacy('assets/bad/bad.nc', 'corrupt');
      await writeLegacy('partial/unfinished.part', 'half');
      await writeLegacy('partial/unfinished.part.json', '{}');
      await fs.mkdir(path.join(dataDirectory, 'assets', 'empty'));

      const store = await openStore(dataDirectory);
      expect(await store.needsLegacyAdoption()).toBe(true);
      const progress: [number, number][] = [];
      const copy = (assetId: string, name: string, content: string, url = 'http://example.org/file') => ({
        assetId,
        name,
        url,
        sha256: sha256(content),
        bytes: content.length,
      });
      const result = await store.adoptLegacy(
        [
          copy('noaa:sst-2024', 'sst.nc', 'first sst'),
          copy('noaa/sst-2024', 'sst.nc', 'second sst'),
          copy('dup/1', 'same.nc', 'same bytes'),
          copy('dup:1', 'same.nc', 'same bytes'),
          copy('ice', '', 'sea ice', 'http://example.org/data/ice.h5'),
          copy('bad', 'bad.nc', 'good'),
          copy('vanished', 'gone.nc', 'gone'),
        ],
        (done, total) => progress.push([done, total]),
      );

      expect(result).toEqual({ adopted: 4, missing: ['noaa:sst-2024', 'bad', 'vanished'] });
      expect(progress.at(-1)).toEqual([7, 7]);
      const contents = Object.fromEntries(await Promise.all(store.copies().map(async (record) => [record.assetId, await fs.readFile(record.path, 'utf8')])));
      expect(contents).toEqual({ 'noaa/sst-2024': 'second sst', 'dup/1': 'same bytes', 'dup:1': 'same bytes', ice: 'sea ice' });
      expect(path.basename(store.copyOf('ice')!.path)).toBe('ice.h5');

      for (const file of [shared, both, ice]) await expect(fs.access(file)).rejects.toThrow();
      expect(await fs.readFile(corrupt, 'utf8')).toBe('corrupt');
      expect(await fs.readdir(path.join(dataDirectory, 'partial'))).toEqual([]);
      const folders = await fs.readdir(path.join(dataDirectory, 'assets'));
      expect(folders).not.toContain('empty');
      expect(folders).not.toContain(legacyName('noaa:sst-2024'));
      expect(folders).toContain('bad');

      expect(await store.needsLegacyAdoption()).toBe(false);
      expect((await openStore(dataDirectory)).copies()).toEqual(store.copies());
    });

    it('is not needed for a fresh data directory', async () => {
      const store = await openStore(dataDirectory);
      expect(await store.needsLegacyAdoption()).toBe(false);
      expect(await store.adoptLegacy([])).toEqual({ adopted: 0, missing: [] });
    });
  });
});
