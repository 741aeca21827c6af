import type { Registry } from 'prom-client';
import { COPY_PROOFS } from '../allocations/allocations.table.js';
import type { Clock } from '../clock.js';
import type { Db } from '../db/database.js';
import { countUnfinishedAudits, countVerdictsSince, readClaimedCopies, RECENT_AUDITS_MS } from '../status/proof-figures.service.js';
import { countedGauge, labelledGauge, listed, queriedGauge } from './gauges.js';

/**
 * Proofs, read from the database at every scrape, so every instance reports the same figures and
 * a restart loses nothing. Verdicts are a gauge over the last 24 h rather than a counter: a
 * counter from the table would count every audit ever at each scrape, and one counted in process
 * would miss the verdicts other instances reach.
 */
export function registerProofGauges(registers: Registry[], db: Db, clock: Clock): void {
  countedGauge(
    registers,
    'dispatcher_copies',
    'Completed copies by proof state: pending (spot check under way), unproven, proven, suspect (failed or missed its last audit).',
    'proof',
    listed(COPY_PROOFS),
    async () => Object.entries((await readClaimedCopies(db)).byProof).map(([key, count]) => ({ key, count })),
  );
  queriedGauge(
    registers,
    'dispatcher_claimed_copy_bytes',
    'Bytes of every completed copy, proven or not (dispatcher_rescued_copy_bytes counts the counted ones).',
    async () => (await readClaimedCopies(db)).bytes,
  );
  labelledGauge(
    registers,
    'dispatcher_audits_last_day',
    "Spot checks and retention audits that ended in the last 24 h (the server's clock), by kind and verdict.",
    ['kind', 'verdict'],
    async () =>
      (await countVerdictsSince(db, clock.now() - RECENT_AUDITS_MS)).map((row) => ({ labels: { kind: row.kind, verdict: row.state }, value: row.count })),
  );
  labelledGauge(
    registers,
    'dispatcher_audits_unfinished',
    'Audits not ended yet, by kind and state: queued (waiting for a proof pass), preparing (its source ranges being read), open (asked of the holder).',
    ['kind', 'state'],
    async () => (await countUnfinishedAudits(db)).map((row) => ({ labels: { kind: row.kind, state: row.state }, value: row.count })),
  );
}
