import { appendEvents } from '../events/events.repository.js';
import type { AppContext } from '../http/context.js';
import { claimDueTasks, markTaskDone, markTaskFailed, type RetryPolicy } from '../tasks/outbox.js';
import { HostKeyMismatchError, runWorkerCommand, type WorkerTarget } from '../workers/ssh.js';
import type { TaskRow } from './rentals.table.js';
import { endRentals, failBatch, inTransaction, quarantineForHostKey, type DeprovisionPayload, type ProvisionPayload } from './rentals.service.js';
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
export async function runDueTasks(ctx: AppContext, now: number): Promise<TaskPassResult> {
  const policy: RetryPolicy = { maxAttempts: ctx.config.taskMaxAttempts, baseDelayMs: ctx.config.taskRetryBaseMs };
  const tasks = await claimDueTasks(ctx.db, ctx.dialect, now, TASKS_PER_PASS, 2 * ctx.config.sshTimeoutMs);
  const result: TaskPassResult = { done: 0, retried: 0, gaveUp: 0 };
  await Promise.all(
    tasks.map(async (task) => {
      const outcome = await runTask(ctx, task, policy);
      result[outcome] += 1;
    }),
  );
  return result;
}

async function runTask(ctx: AppContext, task: TaskRow, policy: RetryPolicy): Promise<keyof TaskPassResult> {
  if (task.kind === 'provision' && (JSON.parse(task.payload) as ProvisionPayload).purpose === 'rent') {
    // Provisioning for /api/rent runs inside the request; found here, its instance stopped
    // mid-way and the renter never got an answer: the batch is rolled back.
    const rental = await ctx.db.selectFrom('rentals').select('batch').where('id', '=', task.rental_id ?? -1).executeTakeFirst();
    if (rental) await failBatch(ctx.db, rental.batch, 'provisioning was interrupted', ctx.config.taskMaxAttempts, ctx.clock.now());
    await markTaskFailed(ctx.db, task, 'provisioning was interrupted', policy, ctx.clock.now(), true);
    return 'gaveUp';
  }
  try {
    if (task.kind === 'provision') await runMigrationProvisioning(ctx, task);
    else await runCleanup(ctx, task);
    await markTaskDone(ctx.db, task.id, ctx.clock.now());
    return 'done';
  } catch (caught) {
    const error = caught as Error;
    const now = ctx.clock.now();
    const permanent = error instanceof HostKeyMismatchError;
    if (!(await markTaskFailed(ctx.db, task, error.message, policy, now, permanent))) return 'retried';
    await giveUp(ctx, task, error, now);
    return 'gaveUp';
  }
}

/** Sets up a migrated rental's account on its new worker; the rental is active again once it is there. */
async function runMigrationProvisioning(ctx: AppContext, task: TaskRow): Promise<void> {
  const payload = JSON.parse(task.payload) as ProvisionPayload;
  const rental = await ctx.db.selectFrom('rentals').selectAll().where('id', '=', task.rental_id ?? -1).executeTakeFirst();
  // Ended, or moved on again, meanwhile: nothing to set up here.
  if (!rental || rental.state !== 'migrating' || rental.node_id !== task.node_id) return;
  const target = await currentTarget(ctx, task, payload.target);
  await runWorkerCommand(target, ctx.provisioningKey, { verb: 'provision', account: payload.account, passwordHash: payload.passwordHash }, ctx.config.sshTimeoutMs);
  const now = ctx.clock.now();
  await inTransaction(ctx.db, async (trx) => {
    const moved = await trx
      .updateTable('rentals')
      .set({ state: 'active' })
      .where('id', '=', rental.id)
      .where('state', '=', 'migrating')
      .where('node_id', '=', task.node_id as number)
      .returning('id')
      .executeTakeFirst();
    if (moved) await appendEvents(trx, now, [{ actor: 'system', kind: 'rental.migrated', subjectType: 'rental', subjectId: rental.id, data: { node_id: task.node_id } }]);
  });
}

async function runCleanup(ctx: AppContext, task: TaskRow): Promise<void> {
  const payload = JSON.parse(task.payload) as DeprovisionPayload;
  const target = await currentTarget(ctx, task, payload.target);
  await runWorkerCommand(target, ctx.provisioningKey, { verb: 'deprovision', account: payload.account }, ctx.config.sshTimeoutMs);
  await appendEvents(ctx.db, ctx.clock.now(), [
    { actor: 'system', kind: 'worker.cleaned', subjectType: 'node', subjectId: task.node_id ?? 0, data: { rental_id: task.rental_id, account: payload.account } },
  ]);
}

/**
 * Where to run a task: the worker as registered now (it may have a new address, or an admin
 * pinned a new host key), or as it was when the task was queued if it is no longer registered.
 */
async function currentTarget(ctx: AppContext, task: TaskRow, queued: WorkerTarget): Promise<WorkerTarget> {
  const worker = task.node_id === null ? undefined : await findWorker(ctx.db, task.node_id);
  return worker?.ssh_host_key && worker.ip && worker.ssh_port && worker.ssh_user ? targetOf(worker) : queued;
}

/**
 * The attempts are used up. A worker whose cleanup keeps failing is quarantined (it must not be
 * rented with a stale account on it); a migration that cannot be set up fails the rental.
 */
async function giveUp(ctx: AppContext, task: TaskRow, error: Error, now: number): Promise<void> {
  if (task.node_id !== null && (await quarantineForHostKey(ctx.db, task.node_id, error, now))) {
    if (task.kind === 'provision') await failMigratingRental(ctx, task, `host key of the new worker changed: ${error.message}`, now);
    return;
  }
  if (task.kind === 'provision') {
    await failMigratingRental(ctx, task, `could not be set up on the new worker: ${error.message}`, now);
    return;
  }
  if (task.node_id === null) return;
  await inTransaction(ctx.db, async (trx) => {
    if (await quarantineWorker(trx, task.node_id as number, `cleanup failed ${task.attempts} times: ${error.message}`, now)) {
      await appendEvents(trx, now, [
        { actor: 'system', kind: 'worker.quarantined', subjectType: 'node', subjectId: task.node_id as number, data: { rental_id: task.rental_id, error: error.message } },
      ]);
    }
  });
}

async function failMigratingRental(ctx: AppContext, task: TaskRow, reason: string, now: number): Promise<void> {
  const rental = await ctx.db.selectFrom('rentals').select(['id', 'state', 'node_id']).where('id', '=', task.rental_id ?? -1).executeTakeFirst();
  if (!rental || rental.state !== 'migrating' || rental.node_id !== task.node_id) return;
  await endRentals(ctx.db, { ids: [rental.id] }, { reason, actor: 'system', state: 'failed' }, ctx.config.taskMaxAttempts, now);
}
