import { describe, expect, it } from 'vitest';
import { causeOf, cooldownAfter, judgeFailure, pauseFor, RELEASE_CAUSES, type ReleaseCause } from './failure-policy.js';

const MINUTE = 60_000;
const known = { size_bytes: 100, sha256: 'a'.repeat(64) };
const unknown = { size_bytes: null, sha256: null };

describe('failure policy', () => {
  it.each<[ReleaseCause, typeof known | typeof unknown, { strike: boolean; cooldown: boolean; mismatch: boolean; pauseHost: boolean }]>([
    ['stopping', known, { strike: false, cooldown: false, mismatch: false, pauseHost: false }],
    ['source_gone', known, { strike: false, cooldown: false, mismatch: false, pauseHost: false }],
    ['source_busy', known, { strike: false, cooldown: false, mismatch: false, pauseHost: true }],
    ['source_unreachable', known, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['source_error', known, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['disk_full', known, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['refused_destination', known, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['other', known, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['size_mismatch', known, { strike: true, cooldown: true, mismatch: true, pauseHost: false }],
    ['oversize', known, { strike: true, cooldown: true, mismatch: true, pauseHost: false }],
    ['checksum_mismatch', known, { strike: true, cooldown: true, mismatch: true, pauseHost: false }],
    // Nothing catalogued to mismatch: the source, not the node, decided the bytes.
    ['size_mismatch', unknown, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['oversize', unknown, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
    ['checksum_mismatch', unknown, { strike: false, cooldown: true, mismatch: false, pauseHost: false }],
  ])('%s against %o', (cause, asset, verdict) => {
    expect(judgeFailure(cause, asset)).toEqual(verdict);
  });

  it('judges every cause', () => {
    for (const cause of RELEASE_CAUSES) expect(judgeFailure(cause, known)).toBeDefined();
  });

  it('doubles the cooldown per failure of the pair, up to the cap', () => {
    const policy = { cooldownMs: 10 * MINUTE, cooldownMaxMs: 60 * MINUTE };
    expect([1, 2, 3, 4, 5, 100].map((failures) => cooldownAfter(failures, policy) / MINUTE)).toEqual([10, 20, 40, 60, 60, 60]);
  });

  it('pauses a host for its Retry-After, the default without one, never past the cap', () => {
    const policy = { pauseDefaultMs: 60_000, pauseMaxMs: 3_600_000 };
    expect(pauseFor(30, policy)).toBe(30_000);
    expect(pauseFor(undefined, policy)).toBe(60_000);
    expect(pauseFor(86_400, policy)).toBe(3_600_000);
    expect(pauseFor(0, policy)).toBe(1000);
  });

  it('infers the cause a client left unsaid from the source status', () => {
    expect(causeOf(undefined, 404)).toBe('source_gone');
    expect(causeOf(undefined, 410)).toBe('source_gone');
    expect(causeOf(undefined, 429)).toBe('source_busy');
    expect(causeOf(undefined, 500)).toBe('other');
    expect(causeOf(undefined, undefined)).toBe('other');
    expect(causeOf('stopping', 404)).toBe('stopping');
  });
});
