import { describe, expect, it } from 'vitest';
import { claimPayloadPath } from './bag-export.js';
import { claimName, safeSegment } from './file-names.js';

describe('safeSegment', () => {
  it.each([
    ['sst.nc', 'sst.nc'],
    ['../../etc/passwd', '___.._etc_passwd'],
    ['..', '__'],
    ['.', '_'],
    ['.hidden', '_hidden'],
    ['a/b\\c', 'a_b_c'],
    ['bell\u0007\u001b[2Jname.csv', 'bell[2Jname.csv'],
    ['evil\u202egnp.exe', 'evilgnp.exe'],
    ['line\nbreak', 'linebreak'],
    ['  spaced out  ', 'spaced out'],
    ['trailing dots...', 'trailing dots'],
    ['what?:*"<>|.txt', 'what_______.txt'],
    ['CON', '_CON'],
    ['nul.txt', '_nul.txt'],
    ['cafe\u0301.csv', 'caf\u00e9.csv'],
  ])('%j becomes %j', (name, safe) => {
    expect(safeSegment(name, 'fallback')).toBe(safe);
  });

  it('falls back when nothing is left, then to _', () => {
    expect(safeSegment('\u0000\u0001', 'asset-1')).toBe('asset-1');
    expect(safeSegment(null, '../x')).toBe('___x');
    expect(safeSegment('', '')).toBe('_');
  });

  it('keeps a name within 200 bytes, with its extension and whole characters', () => {
    const safe = safeSegment(`${'é'.repeat(300)}.csv`, 'x');
    expect(Buffer.byteLength(safe)).toBeLessThanOrEqual(200);
    expect(safe.endsWith('é.csv')).toBe(true);
  });
});

describe('claimName', () => {
  it('numbers a taken name before its extension, case-insensitively', () => {
    const taken = new Set<string>();
    expect(['data.csv', 'data.csv', 'DATA.csv', 'data-2.csv', 'README'].map((name) => claimName(name, taken))).toEqual([
      'data.csv',
      'data-2.csv',
      'DATA-3.csv',
      'data-2-2.csv',
      'README',
    ]);
  });

  it('lays a bag out by organization and dataset, _none for neither, unique per directory', () => {
    const taken = new Set<string>();
    const asset = (id: string, name: string, organization: string | null, dataset: string | null) => ({ id, name, organization, dataset });
    expect(
      [
        asset('1', 'a.nc', 'noaa', 'sst'),
        asset('2', 'a.nc', 'noaa', 'sst'),
        asset('3', 'a.nc', 'noaa', 'wind'),
        asset('4', 'a.nc', null, null),
        asset('5', '', '../up', 'x/y'),
      ].map((each) => claimPayloadPath(each, taken)),
    ).toEqual(['data/noaa/sst/a.nc', 'data/noaa/sst/a-2.nc', 'data/noaa/wind/a.nc', 'data/_none/_none/a.nc', 'data/___up/x_y/5']);
  });
});
