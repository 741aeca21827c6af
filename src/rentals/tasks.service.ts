import type { Db } from '../db/database.js';
import { inTransaction } from '../db/transaction.js';
import { appendEvents } from '../events/events.repository.js';
import { claimDueTasks, markTaskFailed, markTasksDone, type RetryPolicy } from '../tasks/outbox.js';
import type { TaskRow } from '../tasks/tasks.table.js';
import { HostKeyMismatchError, runWorkerCommand, type WorkerTarget } from '../workers/ssh.js';
import type { DeprovisionPayload, ProvisionPayload } from './rental-tasks.js';
import { findRental } from './rentals.repository.js';
import { endRentals, failBatch, quarantineForHostKey, type LeasingDeps } from './rentals.service.js';
import { findWorker, quarantineWorker, targetOf } from './workers.repository.js';

const TASKS_PER_PASS = 50;

export interface TaskPassResult {
  done: number;
  retried: number;
  gaveUp: number;
}

/**
 * The outbox loop: runs every due provisioning and cleanup task, all at once (each is a network
 * round trip to its own worker), and records how each went.
 */
export async function runDueTasks(db: Db, deps: LeasingDeps, now: number): Promise<TaskPassResult> {
  const policy: RetryPolicy = { maxAttempts: deps.config.taskMaxAttempts, baseDelayMs: deps.config.taskRetryBaseMs };
  const tasks = await claimDueTasks(db, deps.dialect, now, TASKS_PER_PASS, 2 * deps.config.sshTimeoutMs);
  const result: TaskPassResult = { done: 0, retried: 0, gaveUp: 0 };
  await Promise.all(
    tasks.map(async (task) => {
      const outcome = await runTask(db, deps, task, policy);
      result[outcome] += 1;
    }),
  );
  return result;
}

async function runTask(db: Db, deps: LeasingDeps, task: TaskRow, policy: RetryPolicy): Promise<keyof TaskPassResult> {
  if (task.kind === 'provision' && (JSON.parse(task.payload) as ProvisionPayload).purpose === 'rent') {
    // Provisioning for /api/rent runs inside the request; found here, its instance stopped
    // mid-way and the renter never got an answer: the batch is rolled back.
    const rental = await findRental(db, task.rental_id ?? -1);
    if (rental) await failBatch(db, rental.batch, 'provisioning was interrupted', deps.config.taskMaxAttempts, deps.clock.now());
    await markTaskFailed(db, task, 'provisioning was interrupted', policy, deps.clock.now(), true);
    return 'gaveUp';
  }
  try {
    if (task.kind === 'provision') await runMigrationProvisioning(db, deps, task);
    else await runCleanup(db, deps, task);
    await markTasksDone(db, [task.id], deps.clock.now());
    return 'done';
  } catch (caught) {
    const error = caught as Error;
    const now = deps.clock.now();
    const permanent = error instanceof HostKeyMismatchError;
    if (!(await markTaskFailed(db, task, error.message, policy, now, permanent))) return 'retried';
    await giveUp(db, deps, task, error, now);
    return 'gaveUp';
  }
}

/** Sets up a migrated rental's account on its new worker; the rental is active again once it is there. */
async function runMigrationProvisioning(db: Db, deps: LeasingDeps, task: TaskRow): Promise<void> {
  const payload = JSON.parse(task.payload) as ProvisionPayload;
  const rental = await findRental(db, task.rental_id ?? -1);
  // Ended, or moved on again, meanwhile: nothing to set up here.
  if (!rental || rental.state !== 'migrating' || rental.node_id !== task.node_id) return;
  const target = await currentTarget(db, task, payload.target);
  await runWorkerCommand(
    target,
    deps.provisioningKey,
    { verb: 'provision', account: payload.account, passwordHash: payload.passwordHash },
    deps.config.sshTimeoutMs,
  );
  const now = deps.clock.now();
  await inTransaction(db, async (trx) => {
    const moved = await trx
      .updateTable('rentals')
      .set({ state: 'active' })
      .where('id', '=', rental.id)
      .where('state', '=', 'migrating')
      .where('node_id', '=', task.node_id as number)
      .returning('id')
      .executeTakeFirst();
    if (moved)
      await appendEvents(trx, now, [
        { actor: 'system', kind: 'rental.migrated', subjectType: 'rental', subjectId: rental.id, data: { node_id: task.node_id } },
      ]);
  });
}

async function runCleanup(db: Db, deps: LeasingDeps, task: TaskRow): Promise<void> {
  const payload = JSON.parse(task.payload) as DeprovisionPayload;
  const target = await currentTarget(db, task, payload.target);
  await runWorkerCommand(target, deps.provisioningKey, { verb: 'deprovision', account: payload.account }, deps.config.sshTimeoutMs);
  await appendEvents(db, deps.clock.now(), [
    {
      actor: 'system',
      kind: 'worker.cleaned',
      subjectType: 'node',
      subjectId: task.node_id ?? 0,
      data: { rental_id: task.rental_id, account: payload.account },
    },
  ]);
}

/**
 * Where to run a task: the worker as registered now (it may have a new address, or an admin
 * pinned a new host key), or as it was when the task was queued if it is no longer registered.
 */
async function currentTarget(db: Db, task: TaskRow, queued: WorkerTarget): Promise<WorkerTarget> {
  const worker = task.node_id === null ? undefined : await findWorker(db, task.node_id);
  return worker?.ssh_host_key && worker.ip && worker.ssh_port && worker.ssh_user ? targetOf(worker) : queued;
}

/**
 * The attempts are used up. A worker whose cleanup keeps failing is quarantined (it must not be
 * rented with a stale account on it); a migration that cannot be set up fails the rental.
 */
async function giveUp(db: Db, deps: LeasingDeps, task: TaskRow, error: Error, now: number): Promise<void> {
  if (task.node_id !== null && (await quarantineForHostKey(db, task.node_id, error, now))) {
    if (task.kind === 'provision') await failMigratingRental(db, deps, task, `host key of the new worker changed: ${error.message}`, now);
    return;
  }
  if (task.kind === 'provision') {
    await failMigratingRental(db, deps, task, `could not be set up on the new worker: ${error.message}`, now);
    return;
  }
  if (task.node_id === null) return;
  await inTransaction(db, async (trx) => {
    if (await quarantineWorker(trx, task.node_id as number, `cleanup failed ${task.attempts} times: ${error.message}`, now)) {
      await appendEvents(trx, now, [
        {
          actor: 'system',
          kind: 'worker.quarantined',
          subjectType: 'node',
          subjectId: task.node_id as number,
          data: { rental_id: task.rental_id, error: error.message },
        },
      ]);
    }
  });
}

async function failMigratingRental(db: Db, deps: LeasingDeps, task: TaskRow, reason: string, now: number): Promise<void> {
  const rental = await findRental(db, task.rental_id ?? -1);
  if (!rental || rental.state !== 'migrating' || rental.node_id !== task.node_id) return;
  await endRentals(db, { ids: [rental.id] }, { reason, actor: 'system', state: 'failed' }, deps.config.taskMaxAttempts, now);
}
