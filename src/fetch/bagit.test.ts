import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { bagInfoText, bagSize, encodeManifestPath, manifestText, payloadOxum, readBagInfoField, removeBagManifests, writeBagTags } from './bagit.js';

const sha = (text: string) => crypto.createHash('sha256').update(text).digest('hex');

describe('BagIt text', () => {
  it('percent-encodes CR, LF and % in manifest paths, and nothing else', () => {
    expect(encodeManifestPath('data/a b/100%\r\n.csv')).toBe('data/a b/100%25%0D%0A.csv');
    expect(encodeManifestPath('data/é/#?.txt')).toBe('data/é/#?.txt');
  });

  it('writes `<sha256>  <path>` lines sorted by path, checksums in lower case', () => {
    const text = manifestText([
      { path: 'data/b', sha256: 'B'.repeat(64) },
      { path: 'data/a', sha256: 'a'.repeat(64) },
    ]);
    expect(text).toBe(`${'a'.repeat(64)}  data/a\n${'b'.repeat(64)}  data/b\n`);
  });

  it('counts octets and files in Payload-Oxum, and sizes in decimal units', () => {
    expect(payloadOxum([])).toBe('0.0');
    expect(
      payloadOxum([
        { path: 'data/a', sha256: '', bytes: 10 },
        { path: 'data/b', sha256: '', bytes: 5 },
      ]),
    ).toBe('15.2');
    expect([999, 1000, 42_600_000_000].map(bagSize)).toEqual(['999 bytes', '1.0 KB', '42.6 GB']);
  });

  it('keeps every bag-info value on its own line, and reads fields back with continuations', () => {
    const text = bagInfoText([
      ['Source-Organization', 'NOAA\nFake-Field: injected'],
      ['Source-Organization', 'NASA'],
    ]);
    expect(text).toBe('Source-Organization: NOAAFake-Field: injected\nSource-Organization: NASA\n');
    expect(readBagInfoField(text, 'Source-Organization')).toEqual(['NOAAFake-Field: injected', 'NASA']);
    expect(readBagInfoField('Dispatcher-Selection: organization=a\n  b\nOther: x\n', 'Dispatcher-Selection')).toEqual(['organization=a b']);
    expect(() => bagInfoText([['Bad Label', 'x']])).toThrow('not a bag-info label');
  });
});

describe('writeBagTags', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes bagit.txt, the manifests and bag-info, the tag manifest covering every tag file, and no temporary file', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bagit-'));
    const info = bagInfoText([['Payload-Oxum', '3.1']]);
    await writeBagTags(dir, [{ path: 'data/x%y', sha256: sha('abc'), bytes: 3 }], info, [{ name: 'extra.tsv', text: 'a\tb\n' }]);
    expect(fs.readdirSync(dir).sort()).toEqual(['bag-info.txt', 'bagit.txt', 'extra.tsv', 'manifest-sha256.txt', 'tagmanifest-sha256.txt']);
    expect(fs.readFileSync(path.join(dir, 'bagit.txt'), 'utf8')).toBe('BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n');
    expect(fs.readFileSync(path.join(dir, 'manifest-sha256.txt'), 'utf8')).toBe(`${sha('abc')}  data/x%25y\n`);
    const tagLines = fs.readFileSync(path.join(dir, 'tagmanifest-sha256.txt'), 'utf8').trim().split('\n');
    expect(tagLines.map((line) => line.split('  ')[1]).sort()).toEqual(['bag-info.txt', 'bagit.txt', 'extra.tsv', 'manifest-sha256.txt']);
    for (const line of tagLines) {
      const [checksum, name] = line.split('  ');
      expect(sha(fs.readFileSync(path.join(dir, name!), 'utf8')), name).toBe(checksum);
    }
    await removeBagManifests(dir);
    expect(fs.readdirSync(dir).sort()).toEqual(['bag-info.txt', 'bagit.txt', 'extra.tsv']);
  });
});
