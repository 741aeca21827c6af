import { appendEvents } from '../events/events.repository.js';
import { queueTasks } from '../tasks/outbox.js';
import type { Db } from '../db/database.js';
import { findOtherProvenWorker } from '../nodes/nodes.repository.js';
import type { ProbeStatus } from '../nodes/nodes.table.js';
import { retryOnUniqueViolation } from '../db/retry.js';
import { probeSshBanner, proveHostKey } from '../workers/ssh.js';
import { deprovisionTask, provisionTask } from './rental-tasks.js';
import { endRentals, type LeasingDeps } from './rentals.service.js';
import { HANDED_OVER_RENTAL_STATES } from './rentals.table.js';
import { findWorker, pickFreeWorkers } from './workers.repository.js';

const PROBES_AT_ONCE = 32;

export interface ProbePassResult {
  probed: number;
  died: string[];
  revived: string[];
  /** Workers whose host key the control plane proved in this pass. */
  proven: string[];
}

interface ProbedWorker {
  id: number;
  name: string;
  ip: string | null;
  ssh_port: number | null;
  ssh_host_key: string | null;
  host_key_verified_at: number | null;
  probe_status: ProbeStatus;
  probe_failures: number;
}

/**
 * The active health check. A worker whose host key is not proven yet gets the control plane's own
 * SSH key exchange with its address, which must present the pinned key (a host key is public, so
 * reporting one proves nothing); one that is proven gets a banner probe, the only kind of probe
 * that reaches it. After WORKER_PROBE_FAILURES failures in a row a worker is dead; one success
 * makes it alive again.
 */
export async function probeWorkers(db: Db, deps: Pick<LeasingDeps, 'config'>, now: number): Promise<ProbePassResult> {
  const workers = await db
    .selectFrom('nodes')
    .select(['id', 'name', 'ip', 'ssh_port', 'ssh_host_key', 'host_key_verified_at', 'probe_status', 'probe_failures'])
    .where('ssh_host_key', 'is not', null)
    .where('ssh_port', 'is not', null)
    .where('ip', 'is not', null)
    .execute();
  const result: ProbePassResult = { probed: workers.length, died: [], revived: [], proven: [] };
  for (let start = 0; start < workers.length; start += PROBES_AT_ONCE) {
    const slice = workers.slice(start, start + PROBES_AT_ONCE);
    const probes = await Promise.all(slice.map((worker) => checkWorker(worker, deps.config.sshTimeoutMs)));
    await db.transaction().execute(async (trx) => {
      for (const [index, worker] of slice.entries()) {
        let probe = probes[index] as WorkerCheck;
        // One host key and one address, one worker: the first to prove them keeps them (the partial unique indexes of migration 0013).
        const identity = { hostKey: worker.ssh_host_key as string, ip: worker.ip, sshPort: worker.ssh_port };
        if (probe.proof && probe.ok && (await findOtherProvenWorker(trx, identity, worker.id)) !== undefined) {
          probe = { ok: false, proof: true, detail: 'another worker has already proven this host key' };
        }
        const failures = probe.ok ? 0 : worker.probe_failures + 1;
        const status = probe.ok ? 'alive' : failures >= deps.config.workerProbeFailures ? 'dead' : worker.probe_status;
        // Only if the worker is still where it was checked: one that registered again meanwhile is checked again.
        const updated = await trx
          .updateTable('nodes')
          .set({ probe_failures: failures, probe_status: status, probed_at: now, ...(probe.proof && probe.ok ? { host_key_verified_at: now } : {}) })
          .where('id', '=', worker.id)
          .where('ip', '=', worker.ip as string)
          .where('ssh_port', '=', worker.ssh_port as number)
          .where('ssh_host_key', '=', worker.ssh_host_key as string)
          .returning('id')
          .executeTakeFirst();
        if (!updated) continue;
        if (probe.proof && (probe.ok || failures === 1)) {
          if (probe.ok) result.proven.push(worker.name);
          await appendEvents(trx, now, [
            {
              actor: 'system',
              kind: probe.ok ? 'worker.host_key_proven' : 'worker.host_key_unproven',
              subjectType: 'node',
              subjectId: worker.id,
              data: { address: `${worker.ip}:${worker.ssh_port}`, ...(probe.ok ? {} : { detail: probe.detail }) },
            },
          ]);
        }
        if (status === worker.probe_status) continue;
        (status === 'dead' ? result.died : result.revived).push(worker.name);
        await appendEvents(trx, now, [
          {
            actor: 'system',
            kind: status === 'dead' ? 'worker.dead' : 'worker.alive',
            subjectType: 'node',
            subjectId: worker.id,
            data: { probe: probe.detail, failures },
          },
        ]);
      }
    });
  }
  return result;
}

interface WorkerCheck {
  ok: boolean;
  /** A key exchange proving the host key, rather than a banner probe. */
  proof: boolean;
  detail: string;
}

async function checkWorker(worker: ProbedWorker, timeoutMs: number): Promise<WorkerCheck> {
  const target = { host: worker.ip as string, port: worker.ssh_port as number, hostKey: worker.ssh_host_key as string };
  if (worker.host_key_verified_at !== null) return { ...(await probeSshBanner(target.host, target.port, timeoutMs)), proof: false };
  const proof = await proveHostKey(target, timeoutMs);
  return proof.ok ? { ok: true, proof: true, detail: 'host key proven' } : { ok: false, proof: true, detail: proof.detail };
}

export interface MigrationPassResult {
  moved: number;
  failed: number;
}

/**
 * Invariant 5 for rentals: a live rental on a dead worker moves to a free healthy worker with the
 * same end time and the same account and password (set up there through the outbox), or fails
 * with an event when no worker is free. Either way the dead worker gets a cleanup task.
 */
export async function moveRentalsOffDeadWorkers(db: Db, deps: Pick<LeasingDeps, 'dialect' | 'config'>, now: number): Promise<MigrationPassResult> {
  const stranded = await db
    .selectFrom('rentals')
    .innerJoin('nodes', 'nodes.id', 'rentals.node_id')
    .select(['rentals.id', 'rentals.node_id', 'rentals.account', 'rentals.password_hash', 'rentals.migrations', 'nodes.name'])
    .where('rentals.state', 'in', HANDED_OVER_RENTAL_STATES)
    .where((eb) => eb.or([eb('nodes.probe_status', '=', 'dead'), eb('nodes.status', '=', 'dead'), eb('nodes.quarantined_at', 'is not', null)]))
    .orderBy('rentals.id')
    .execute();
  const result: MigrationPassResult = { moved: 0, failed: 0 };
  for (const rental of stranded) {
    const moved = await retryOnUniqueViolation(deps.dialect, () =>
      db.transaction().execute(async (trx) => {
        const [target] = await pickFreeWorkers(trx, deps.dialect, 1, rental.node_id);
        if (!target) return false;
        const history = [...(JSON.parse(rental.migrations) as unknown[]), { from_node: rental.node_id, to_node: target.id, at: now }];
        const updated = await trx
          .updateTable('rentals')
          .set({ node_id: target.id, state: 'migrating', migrations: JSON.stringify(history) })
          .where('id', '=', rental.id)
          .where('node_id', '=', rental.node_id)
          .where('state', 'in', HANDED_OVER_RENTAL_STATES)
          .returning('id')
          .executeTakeFirst();
        if (!updated) return true;
        const from = await findWorker(trx, rental.node_id);
        const maxAttempts = deps.config.taskMaxAttempts;
        await queueTasks(trx, [provisionTask(rental, target, 'migrate', maxAttempts), ...(from ? [deprovisionTask(rental, from, maxAttempts)] : [])], now);
        await appendEvents(trx, now, [
          { actor: 'system', kind: 'rental.migrating', subjectType: 'rental', subjectId: rental.id, data: { from_node: rental.name, to_node: target.name } },
        ]);
        return true;
      }),
    );
    if (moved) {
      result.moved += 1;
      continue;
    }
    const failed = await endRentals(
      db,
      { ids: [rental.id] },
      { reason: `worker ${rental.name} is dead and no free worker could take the rental`, actor: 'system', state: 'failed' },
      deps.config.taskMaxAttempts,
      now,
    );
    result.failed += failed.length;
  }
  return result;
}
