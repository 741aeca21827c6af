import { describe, expect, it } from 'vitest';
import { PEERS_HOST } from '../sources/source-host.js';
import { createRestraints } from './job.js';

describe("the agent's own restraints", () => {
  it('keeps a failed asset away from the origin it failed from only: a dark source does not hold up a repair from copies', () => {
    let now = 1_000_000;
    const restraints = createRestraints(60_000, () => now);
    restraints.defer('sst', 'data.example.org');

    expect(restraints.deferredUntil('sst', 'data.example.org')).toBe(now + 60_000);
    expect(restraints.deferredUntil('sst', PEERS_HOST)).toBeUndefined();
    expect(restraints.deferredUntil('ice', 'data.example.org')).toBeUndefined();

    // A failed repair is kept to itself as well, doubling per failure from that origin.
    restraints.defer('sst', PEERS_HOST);
    restraints.defer('sst', PEERS_HOST);
    expect(restraints.deferredUntil('sst', PEERS_HOST)).toBe(now + 120_000);
    now += 120_001;
    expect(restraints.deferredUntil('sst', PEERS_HOST)).toBeUndefined();
    expect(restraints.deferredUntil('sst', 'data.example.org')).toBeUndefined();
  });

  it('leaves a paused host alone until the latest time it was asked for', () => {
    const now = 1_000_000;
    const restraints = createRestraints(60_000, () => now);
    restraints.pause(PEERS_HOST, now + 30_000);
    restraints.pause(PEERS_HOST, now + 10_000);
    expect(restraints.pausedUntil(PEERS_HOST)).toBe(now + 30_000);
    expect(restraints.pausedUntil('data.example.org')).toBeUndefined();
  });
});
