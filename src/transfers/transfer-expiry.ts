import type { Db } from '../db/database.js';
import { endClaim } from '../db/due-work.js';
import { appendEvents } from '../events/events.repository.js';
import { lapsedTransferIds, transferWork } from './transfers.repository.js';

/** A relay ends its own transfers on time; a transfer still open this long after its lease lost its relay (an instance stopped). */
const ORPHAN_GRACE_MS = 60_000;
const PER_PASS = 1000;

/** Ends transfers whose requester is gone with them: `expired`, with their events. */
export async function expireOrphanedTransfers(db: Db, now: number): Promise<number> {
  const ids = await lapsedTransferIds(db, now - ORPHAN_GRACE_MS, PER_PASS);
  if (ids.length === 0) return 0;
  const ended = await endClaim(db, transferWork, { id: ids }, 'expired', { ended_at: now, end_reason: 'its relay stopped' });
  await appendEvents(
    db,
    now,
    ended.map((row) => ({
      actor: 'system',
      kind: 'transfer.expired',
      subjectType: 'transfer',
      subjectId: row.id,
      data: { asset_id: row.asset_id, node_id: row.node_id, purpose: row.purpose, reason: 'its relay stopped' },
    })),
  );
  return ended.length;
}
