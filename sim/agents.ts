import { releaseAllocation } from '../src/allocations/allocations.service.js';
import { completeAllocation } from '../src/allocations/completion.service.js';
import { loseCopies } from '../src/allocations/copy-loss.service.js';
import type { ReleaseCause } from '../src/allocations/failure-policy.js';
import type { GrantedAsset } from '../src/allocations/grants.service.js';
import { answerAudit } from '../src/audits/audit-answers.service.js';
import { openAuditsOf } from '../src/audits/audits.repository.js';
import type { AuditAnswer } from '../src/audits/audits.schemas.js';
import { AppError } from '../src/errors.js';
import { nonceHash } from '../src/lib/merkle.js';
import { markNodeOffline, recordHeartbeat } from '../src/nodes/liveness.service.js';
import type { ControlPlane } from './control-plane.js';
import type { Tally } from './tally.js';
import { addCopy, addJob, checksumOf, contentOf, copyOnline, dropJob, sourceStatus, type Job, type SimNode, type World } from './world.js';

// The simulated agents: what `dispatcher agent` does, through the services its routes call.

/** What a download will meet, decided when it starts: a failure after some bytes, or none. */
export interface Fate {
  cause: ReleaseCause;
  sourceStatus?: number;
  afterBytes: number;
}

export type SimJob = Job & { allocationId: number; fate: Fate | null; host: string };

/** A granted asset becomes a download on the node; its fate follows from the source as it is now. */
export function startJob(world: World, node: SimNode, granted: GrantedAsset, now: number): SimJob {
  const asset = world.assetsById.get(granted.id);
  if (!asset) throw new Error(`the control plane granted an asset the world does not have: ${granted.id}`);
  const fromPeers = granted.restoreUrl !== null;
  const job: SimJob = {
    assetId: granted.id,
    allocationId: granted.allocationId,
    bytes: asset.bytes,
    reserved: granted.reservedBytes,
    bytesDone: 0,
    fromPeers,
    fate: null,
    host: fromPeers ? '(peers)' : new URL(asset.url).host,
  };
  if (fromPeers) {
    if (!copyOnline(asset.id, node)) job.fate = { cause: 'other', afterBytes: 0 };
  } else {
    const status = sourceStatus(world, asset, now);
    if (status === 404) job.fate = { cause: 'source_gone', sourceStatus: 404, afterBytes: 0 };
    else if (status === 503) job.fate = { cause: 'source_unreachable', sourceStatus: 503, afterBytes: 0 };
    else if (granted.sizeBytes !== null && granted.sizeBytes !== asset.bytes) job.fate = { cause: 'size_mismatch', afterBytes: 0 };
    // The agent stops at once when the source announces more than was set aside (its Content-Length).
    else if (granted.sizeBytes === null && asset.bytes > granted.reservedBytes) job.fate = { cause: 'oversize', afterBytes: 0 };
  }
  addJob(node, job);
  return job;
}

/** Gives a download back with its cause, as the agent's /release does; its bytes were for nothing. */
export async function giveBack(plane: ControlPlane, node: SimNode, job: SimJob, fate: Fate, tally: Tally, now: number): Promise<void> {
  dropJob(node, job.assetId);
  tally.wasted(job.bytesDone, `released:${fate.cause}`);
  tally.releases[fate.cause] = (tally.releases[fate.cause] ?? 0) + 1;
  const started = performance.now();
  try {
    await releaseAllocation(
      plane.db,
      { assetId: job.assetId, nodeId: node.id as number, reason: fate.cause, sourceStatus: fate.sourceStatus, cause: fate.cause, actor: `node:${node.name}` },
      { goneConfirmations: plane.config.sourceGoneConfirmations, ...plane.failurePolicy },
      now,
    );
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
  } finally {
    tally.time('release', started);
  }
}

/** A finished download reported with /complete; a liar reports one it never made. */
export async function reportCopy(plane: ControlPlane, world: World, node: SimNode, job: SimJob, tally: Tally, now: number): Promise<void> {
  dropJob(node, job.assetId);
  const started = performance.now();
  try {
    const result = await completeAllocation(
      plane.db,
      {
        assetId: job.assetId,
        nodeId: node.id as number,
        sha256: checksumOf(job.assetId),
        bytes: job.bytes,
        uri: null,
        merkleRoot: null,
        actor: `node:${node.name}`,
      },
      {
        ...plane.failurePolicy,
        spotChecks: plane.config.verifySpotChecks,
        vettingAudits: plane.config.vettingAudits,
        maxPlausibleRateBps: plane.config.maxPlausibleRateBps,
      },
      now,
    );
    tally.completions += 1;
    if (node.kind !== 'liar') addCopy(node, job.assetId, job.bytes);
    if (result.proof === 'proven' || result.verified) tally.countedAtOnce += 1;
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    tally.wasted(node.kind === 'liar' ? 0 : job.bytes, `refused:${error.code}`);
    tally.refusedCompletions[error.code] = (tally.refusedCompletions[error.code] ?? 0) + 1;
  } finally {
    tally.time('complete', started);
  }
  void world;
}

/** A heartbeat with the downloads' progress; downloads the control plane ended are dropped; open audits are answered. */
export async function sendHeartbeat(plane: ControlPlane, node: SimNode, tally: Tally, now: number): Promise<void> {
  const id = node.id as number;
  const used = [...node.copies.values()].reduce((sum, bytes) => sum + bytes, 0);
  const started = performance.now();
  const result = await recordHeartbeat(
    plane.db,
    id,
    {
      freeBytes: Math.max(0, Math.floor(node.diskBytes - used)),
      bytesInFlight: null,
      rateBytesPerSecond: node.jobs.size > 0 ? Math.floor(node.bandwidthBps) : null,
      progress: [...node.jobs.values()].map((job) => ({ assetId: job.assetId, bytesDone: Math.floor(job.bytesDone) })),
    },
    plane.allocationPolicy,
    now,
  );
  tally.heartbeats += 1;
  tally.time('heartbeat', started);
  for (const assetId of result.ended) {
    const job = node.jobs.get(assetId);
    if (!job) continue;
    dropJob(node, assetId);
    tally.wasted(job.bytesDone, 'ended_by_control_plane');
  }
  const asked = performance.now();
  const audits = await openAuditsOf(plane.db, id, now);
  tally.time('open_audits', asked);
  const answering = performance.now();
  for (const audit of audits) await answer(plane, node, audit, tally, now);
  if (audits.length > 0) tally.time('answer_audits', answering);
}

async function answer(plane: ControlPlane, node: SimNode, audit: Awaited<ReturnType<typeof openAuditsOf>>[number], tally: Tally, now: number): Promise<void> {
  const ranges = audit.ranges === null ? [] : (JSON.parse(audit.ranges) as [number, number][]);
  let reply: AuditAnswer;
  if (node.kind === 'liar') reply = { hashes: ranges.map(() => '0'.repeat(64)) };
  else if (!node.copies.has(audit.asset_id)) reply = { missing: true };
  else if (audit.method === 'ranges')
    reply = { hashes: ranges.map(([offset, length]) => nonceHash(audit.nonce as string, contentOf(audit.asset_id, offset, length))) };
  // Copies report no Merkle root, so no block audit is ever asked; an honest agent without the tree could not answer one.
  else reply = { missing: true };
  try {
    const judgement = await answerAudit(plane.db, plane.proofDeps, node.id as number, Number(audit.id), reply, now);
    tally.audits[`${audit.kind}:${judgement.verdict}`] = (tally.audits[`${audit.kind}:${judgement.verdict}`] ?? 0) + 1;
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
  }
}

/** The agent starts: copies gone from its disk are reported lost (its start-up check). */
export async function startAgent(plane: ControlPlane, node: SimNode, tally: Tally, now: number): Promise<void> {
  if (node.vanished.size === 0) return;
  const lost = [...node.vanished].map((assetId) => ({ assetId, reason: 'missing' as const }));
  node.vanished.clear();
  tally.reportedMissing += await loseCopies(plane.db, node.id as number, lost, `node:${node.name}`, now);
}

/** A clean stop: unfinished work given back (`stopping`), then `offline`. */
export async function stopAgent(plane: ControlPlane, node: SimNode, tally: Tally, now: number): Promise<void> {
  for (const job of [...node.jobs.values()] as SimJob[]) await giveBack(plane, node, job, { cause: 'stopping', afterBytes: 0 }, tally, now);
  await markNodeOffline(plane.db, node.id as number, `node:${node.name}`, now);
}
