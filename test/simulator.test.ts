import { describe, expect, it } from 'vitest';
import { runCampaign } from '../sim/campaign.js';
import { loadCampaignConfig } from '../sim/campaign-config.js';
import { controlPlaneConfig } from '../sim/control-plane.js';
import { summarize } from '../sim/figures.js';
import { createTestDatabase, dialects } from './databases.js';

const HOUR = 3_600_000;
const REGRESSION = new URL('../sim/regression.json', import.meta.url);

// The campaign simulator's regression configuration (sim/regression.json): a few dozen churning
// nodes, some liars and deleters, vanishing and mis-sized sources and a 30 % mass failure, run
// against the real services on each database. It asserts what the policies promise.
describe.each(dialects)('campaign simulator on %s', (dialect) => {
  it('keeps the promises of the allocation, repair and retry policies', { timeout: 240_000 }, async () => {
    const database = await createTestDatabase(dialect);
    try {
      const config = loadCampaignConfig(REGRESSION);
      const run = await runCampaign(database.handle, config);
      const figures = await summarize(run, dialect);
      const plane = controlPlaneConfig(config.controlPlane);

      // No asset of priority ≥ 8 waited for its first copy while a lower one got a further copy it could have had instead.
      expect(figures.starvation_steps, figures.starvation_example ?? '').toBe(0);

      // After the 30 % loss, every recoverable asset is back at target on living disks within what the
      // policies add up to: silence noticed (timeout + grace), a dead disk's copies stop counting once a
      // whole audit interval overdue (at most two intervals after their last proof), the dead nodes' work
      // reclaimed at RECLAIM_MAX_PER_MINUTE, and an hour to download again.
      const failure = figures.mass_failure;
      expect(failure).not.toBeNull();
      const reclaimHours = (figures.grants / plane.reclaimMaxPerMinute / 60) * 0.3;
      const boundHours = (plane.nodeTimeoutMs + plane.nodeDeadGraceMs + 2 * plane.auditIntervalMs) / HOUR + reclaimHours + 1;
      expect(failure?.recoverable).toBeGreaterThan(0);
      expect(failure?.hours_to_100, JSON.stringify(failure?.not_recovered)).not.toBeNull();
      expect(failure?.hours_to_100 as number).toBeLessThanOrEqual(boundHours);

      // Waste (bytes downloaded for nothing: expired, reclaimed, given back, refused) under 5 %.
      expect(figures.waste_ratio).toBeLessThan(0.05);

      // No node-asset pair is retried in a loop: a pair's n-th grant waits 2^(n-2) cooldowns, so a campaign of T holds at most 2 + log2(T / cooldown).
      const campaignMs = config.days * 24 * HOUR;
      expect(figures.retries.most_grants_of_one_pair).toBeLessThanOrEqual(2 + Math.ceil(Math.log2(campaignMs / plane.retryCooldownMs)));

      // The important data goes first: the top class reaches 90 % no later than the others.
      const [top, ...rest] = figures.priority_classes;
      for (const other of rest) expect(top?.hours_to_90 ?? Infinity).toBeLessThanOrEqual(other.hours_to_90 ?? Infinity);
    } finally {
      await database.drop();
    }
  });
});
