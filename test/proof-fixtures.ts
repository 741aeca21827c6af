import { expect } from 'vitest';
import { refreshCopyCounts } from '../src/allocations/end-allocations.js';
import type { CopyProof } from '../src/allocations/allocations.table.js';
import type { AuditKind, AuditState } from '../src/audits/audits.table.js';
import { makeAssets, registerNode, type TestServer } from './server.js';

const MIB = 1024 * 1024;
const DAY = 86_400_000;

/** The copy of `proof-<state>` is in that proof state; its size in MiB is its place in this list, plus one. */
export const FIXTURE_PROOFS: readonly CopyProof[] = ['proven', 'suspect', 'pending', 'unproven'];

export interface ProofFixture {
  node: { id: number; name: string; token: string };
  /** Allocation id of each proof state's copy. */
  copies: Record<CopyProof, number>;
  /** Bytes of the counted copies (proven 1 MiB, suspect 2 MiB) and of all of them (1 + 2 + 3 + 4 MiB). */
  bytes: { proven: number; claimed: number };
  /** What the fixture's audits count: verdicts within the last 24 h, and audits not ended, by kind. */
  lastDay: Record<AuditKind, { passed: number; failed: number; missed: number }>;
  unfinished: Record<AuditKind, { queued: number; preparing: number; open: number }>;
}

/**
 * One copy in each proof state, completed through the API and then set to its state as the proof
 * passes leave it (suspect still counts; pending and unproven do not), and audits ended at known
 * times: inside the last 24 h, exactly 24 h ago (inside), just before (outside), a cancelled one
 * (no verdict), and unfinished ones.
 */
export async function addProofFixture(server: TestServer): Promise<ProofFixture> {
  await server.api.post(
    '/assets',
    FIXTURE_PROOFS.flatMap((proof, index) => makeAssets(1, { size_mb: index + 1, sha256: 'a'.repeat(64), priority: 9 - index }, `proof-${proof}`)),
    server.adminToken,
  );
  const node = await registerNode(server, 'proof-holder');
  const granted = await server.api.post('/allocate', { free_space_gb: 100, node_id: node.name, max_assets: FIXTURE_PROOFS.length }, node.token);
  expect(granted.body.map((asset: { id: string }) => asset.id)).toEqual(FIXTURE_PROOFS.map((proof) => `proof-${proof}-1`));
  const copies = {} as Record<CopyProof, number>;
  for (const [index, proof] of FIXTURE_PROOFS.entries()) {
    const assetId = `proof-${proof}-1`;
    const completed = await server.api.post(
      '/complete',
      { asset_id: assetId, node_id: node.name, sha256: 'a'.repeat(64), bytes: (index + 1) * MIB },
      node.token,
    );
    expect(completed.status).toBe(200);
    const counted = proof === 'proven' || proof === 'suspect';
    const row = await server.ctx.db
      .updateTable('allocations')
      .set({ proof, verified: counted ? 1 : 0, proven_at: counted ? server.clock.now() : null })
      .where('asset_id', '=', assetId)
      .returning('id')
      .executeTakeFirstOrThrow();
    copies[proof] = Number(row.id);
    await refreshCopyCounts(server.ctx.db, assetId);
  }

  const now = server.clock.now();
  const audit = (proof: CopyProof, kind: AuditKind, state: AuditState, endedAt: number | null) => ({
    allocation_id: copies[proof],
    asset_id: `proof-${proof}-1`,
    node_id: node.id,
    kind,
    method: 'ranges' as const,
    state,
    created_at: now - 2 * DAY,
    due_at: now - 2 * DAY,
    ended_at: endedAt,
  });
  await server.ctx.db
    .insertInto('audits')
    .values([
      audit('proven', 'spot_check', 'passed', now - 1000),
      audit('suspect', 'spot_check', 'passed', now - DAY),
      audit('proven', 'retention', 'passed', now - 60_000),
      audit('suspect', 'retention', 'failed', now - 3_600_000),
      audit('suspect', 'retention', 'missed', now - 2 * 3_600_000),
      // Outside the window, or no verdict: not counted.
      audit('proven', 'retention', 'failed', now - DAY - 1),
      audit('suspect', 'spot_check', 'missed', now - 2 * DAY),
      audit('unproven', 'spot_check', 'cancelled', now - 1000),
      // Not ended: the backlog.
      audit('pending', 'spot_check', 'queued', null),
      audit('proven', 'retention', 'open', null),
      audit('suspect', 'retention', 'preparing', null),
    ])
    .execute();
  return {
    node,
    copies,
    bytes: { proven: 3 * MIB, claimed: 10 * MIB },
    lastDay: { spot_check: { passed: 2, failed: 0, missed: 0 }, retention: { passed: 1, failed: 1, missed: 1 } },
    unfinished: { spot_check: { queued: 1, preparing: 0, open: 0 }, retention: { queued: 0, preparing: 1, open: 1 } },
  };
}
