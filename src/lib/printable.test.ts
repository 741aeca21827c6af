import { describe, expect, it } from 'vitest';
import { printable } from './printable.js';

describe('printable', () => {
  it.each([
    ['an escape sequence loses its ESC', 'bad\x1b[2J\x1b]0;title\x07 gateway', 'bad[2J]0;title gateway'],
    ['newlines, tabs, NUL and DEL', 'a\nb\r\tc\x00d\x7f', 'abcd'],
    ['C1 controls (CSI, NEL)', 'x\u009b31my\u0085', 'x31my'],
    ['bidi overrides and isolates', 'file\u202egnp.exe\u2066\u2069\u200e\u200f', 'filegnp.exe'],
  ])('strips %s', (_name, input, expected) => {
    expect(printable(input)).toBe(expected);
  });

  it('keeps ordinary unicode', () => {
    expect(printable('Température ｆｕｌｌ 海面 🌊')).toBe('Température ｆｕｌｌ 海面 🌊');
  });
});
