import type { FakeClock } from '../src/clock.js';
import { loadConfig, type Config } from '../src/config.js';
import type { DatabaseHandle, Db } from '../src/db/database.js';
import type { Dialect } from '../src/db/dialect.js';
import type { AppContext } from '../src/http/context.js';
import { AUDIT_EXPIRY_LOOP, defineLoops, EXPIRY_LOOP, LIVENESS_LOOP, PRIORITY_LOOP, PROOFS_LOOP, RECLAIM_LOOP } from '../src/loops.js';
import { createAllocationBatcher, type AllocationBatcher } from '../src/allocations/allocation-batcher.js';
import { allocationPolicyFrom, type AllocationPolicy } from '../src/allocations/grants.service.js';
import { failurePolicyFrom, type FailurePolicy } from '../src/allocations/failure-policy.js';
import { importAssets, replicaDefaultFrom } from '../src/assets/assets.service.js';
import { proofDepsFrom, type ProofDeps } from '../src/audits/proof-deps.js';
import { expireAudits, runProofs } from '../src/audits/proof.service.js';
import { createEnrollmentToken, registerNode } from '../src/nodes/nodes.service.js';
import { insertUser } from '../src/users/users.repository.js';
import type { SafeFetch } from '../src/agent/safe-fetch.js';
import type { Random } from './random.js';
import type { SimAsset, World } from './world.js';

// The real control plane, in process: its services and its loops, on a real database, with a fake
// clock. Nothing here decides anything; it only calls what a route or a loop of `dispatcher serve` calls.

/** The loops of src/loops.ts the campaign runs (the rest serve rentals, schedules, imports and transfers). */
const CAMPAIGN_LOOPS = [PROOFS_LOOP, AUDIT_EXPIRY_LOOP, EXPIRY_LOOP, LIVENESS_LOOP, RECLAIM_LOOP, PRIORITY_LOOP];

export interface ScheduledLoop {
  name: string;
  intervalMs: number;
  nextAt: number;
  tick(now: number): Promise<unknown>;
  /** Wall milliseconds spent in this loop, for the report. */
  wallMs: number;
}

export interface ControlPlane {
  db: Db;
  dialect: Dialect;
  config: Config;
  clock: FakeClock;
  allocationPolicy: AllocationPolicy;
  failurePolicy: FailurePolicy;
  proofDeps: ProofDeps;
  batcher: AllocationBatcher;
  loops: ScheduledLoop[];
}

/** The control plane's Config from the campaign's settings, parsed as `dispatcher serve` parses its environment. */
export function controlPlaneConfig(env: Record<string, string>): Config {
  return loadConfig({ LOG_LEVEL: 'silent', ...env });
}

export function createControlPlane(
  handle: DatabaseHandle,
  config: Config,
  clock: FakeClock,
  sourceFetch: SafeFetch,
  random: Random,
  stepMs: number,
): ControlPlane {
  const proofDeps = proofDepsFrom(config, sourceFetch, () => random.next());
  const allocationPolicy = allocationPolicyFrom(config);
  // defineLoops reads only db, dialect, config and clock to build these loops' definitions.
  const ctx = { db: handle.db, dialect: handle.dialect, config, clock } as unknown as AppContext;
  const loops = defineLoops(ctx)
    .filter((loop) => CAMPAIGN_LOOPS.includes(loop.name))
    .map((loop): ScheduledLoop => {
      // A loop shorter than the step runs once per step; the proofs pass then gets the step's budget (runProofs takes its pass length).
      const passMs = Math.max(loop.intervalMs, stepMs);
      const tick =
        loop.name === PROOFS_LOOP
          ? (now: number) => runProofs(handle.db, handle.dialect, proofDeps, passMs, now)
          : loop.name === AUDIT_EXPIRY_LOOP
            ? (now: number) => expireAudits(handle.db, proofDeps, now)
            : loop.tick;
      return { name: loop.name, intervalMs: loop.intervalMs, nextAt: clock.now() + loop.intervalMs, tick, wallMs: 0 };
    });
  return {
    db: handle.db,
    dialect: handle.dialect,
    config,
    clock,
    allocationPolicy,
    failurePolicy: failurePolicyFrom(config),
    proofDeps,
    batcher: createAllocationBatcher({ db: handle.db, dialect: handle.dialect, clock, policy: allocationPolicy }),
    loops,
  };
}

/** Runs every loop due by now, once each, in the order src/loops.ts lists them. */
export async function runDueLoops(plane: ControlPlane, now: number): Promise<void> {
  for (const loop of plane.loops) {
    if (loop.nextAt > now) continue;
    const started = performance.now();
    await loop.tick(now);
    loop.wallMs += performance.now() - started;
    while (loop.nextAt <= now) loop.nextAt += loop.intervalMs;
  }
}

/** The catalog, imported as `dispatcher import` would: seed-format assets in batches. */
export async function importCatalog(plane: ControlPlane, assets: SimAsset[], now: number): Promise<void> {
  const replicasFor = replicaDefaultFrom(plane.config);
  for (let start = 0; start < assets.length; start += 5000) {
    const inputs = assets
      .slice(start, start + 5000)
      .map((asset) => ({ id: asset.id, url: asset.url, name: asset.id, priority: asset.priority, size_bytes: asset.catalogBytes }));
    await importAssets(plane.db, inputs, { replicasFor, actor: 'sim', source: 'campaign' }, now);
  }
}

/** Registers the world's nodes that joined by now, each with its operator's personal enrollment token. */
export async function registerJoinedNodes(plane: ControlPlane, world: World, tokens: Map<number, number>, now: number): Promise<number> {
  let registered = 0;
  for (const node of world.nodes) {
    if (node.id !== null || node.joinsAt > now) continue;
    let tokenId = tokens.get(node.operator);
    if (tokenId === undefined) {
      const user = await insertUser(plane.db, { username: world.operators[node.operator] as string, passwordHash: 'sim:no-login', role: 'user', now });
      const token = await createEnrollmentToken(plane.db, { createdBy: null, operatorId: user?.id ?? null, actor: 'sim', note: null, expiresAt: null, now });
      tokenId = token.id;
      tokens.set(node.operator, tokenId);
    }
    const result = await registerNode(
      plane.db,
      { hostname: node.name, ip: null, sshPort: null, nodeId: node.name, tags: { region: node.region } },
      { kind: 'enrollment', tokenId, actor: 'sim' },
      now,
    );
    node.id = result.node.id;
    registered += 1;
  }
  return registered;
}
