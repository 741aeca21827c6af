import crypto from 'node:crypto';
import { encrypt as cryptSha512 } from 'unixcrypt';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import { retryOnUniqueViolation } from '../db/retry.js';
import { inTransaction } from '../db/transaction.js';
import { AppError } from '../errors.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import { failProvisionTasks, markTasksDone, queueTasks } from '../tasks/outbox.js';
import { HostKeyMismatchError, runWorkerCommand, type ProvisioningKey } from '../workers/ssh.js';
import { reservedWorkers } from '../schedules/reservations.js';
import { checkUserQuotas } from './quotas.service.js';
import { checkPasswordStrength, generateAccountName, generatePassword } from './rental-credentials.js';
import { provisionTask, queueCleanups } from './rental-tasks.js';
import {
  activateBatch,
  endActiveRentals,
  extendLease,
  failProvisioningBatch,
  findDueRentalIds,
  findProvisioningBatches,
  findRental,
  insertBatch,
} from './rentals.repository.js';
import { WORKER_HOLDING_RENTAL_STATES, type RentalRow } from './rentals.table.js';
import { countFreeWorkers, pickFreeWorkers, quarantineWorker, removeIdleWorkers, targetOf, type WorkerRow } from './workers.repository.js';

/**
 * What the rental services use besides the database. `clock` is read only after slow work (SSH
 * provisioning), where the `now` the caller passed in has gone stale.
 */
export interface LeasingDeps {
  dialect: Dialect;
  config: Config;
  clock: Clock;
  provisioningKey: ProvisioningKey;
}

/** Who acts on rentals: a user (admins act on every rental). */
export interface Renter {
  userId: number;
  username: string;
  admin: boolean;
  actor: string;
}

export interface RentInput {
  durationMs: number;
  count: number;
  password?: string;
  passwordHash?: string;
  scheduleId?: number;
}

export interface RentedWorker {
  rental: RentalRow;
  worker: WorkerRow;
  password: string;
}

const hoursOf = (ms: number) => Math.round((ms / 3_600_000) * 1000) / 1000;

/**
 * `POST /api/rent`: reserves `count` free workers in one transaction (all or none), then
 * provisions every one of them at once, outside the transaction. Only when all are provisioned
 * do the rentals become active and the credentials go back; if any fails, the whole batch fails
 * and whatever was provisioned is cleaned up through the outbox. The renter's quotas are checked
 * in the same transaction (checkUserQuotas), for a reserve schedule's window too.
 */
export async function rentWorkers(db: Db, deps: LeasingDeps, renter: Renter, input: RentInput, now: number): Promise<RentedWorker[]> {
  const { config } = deps;
  if (input.durationMs > config.rentMaxMs) {
    throw new AppError('VALIDATION_ERROR', `duration_hours may be at most ${config.rentMaxMs / 3_600_000} (RENT_MAX_HOURS).`);
  }
  if (input.count > config.rentMaxCount) throw new AppError('VALIDATION_ERROR', `count may be at most ${config.rentMaxCount} (RENT_MAX_COUNT).`);
  if (input.password !== undefined) checkPasswordStrength(input.password, renter.username);
  // A reserve schedule's rentals come with the hash of the password its owner chose beforehand.
  const password = input.passwordHash ? '' : (input.password ?? generatePassword());
  const passwordHash = input.passwordHash ?? cryptSha512(password);
  const batch = crypto.randomUUID();
  const reserved = await reserveBatch(db, deps, renter, input, { batch, passwordHash }, now);

  const outcomes = await Promise.allSettled(
    reserved.map(({ rental, worker }) =>
      runWorkerCommand(targetOf(worker), deps.provisioningKey, { verb: 'provision', account: rental.account, passwordHash }, config.sshTimeoutMs),
    ),
  );
  const failures = outcomes.flatMap((outcome, index) =>
    outcome.status === 'rejected' ? [{ worker: (reserved[index] as (typeof reserved)[number]).worker, error: outcome.reason as Error }] : [],
  );
  const finishedAt = deps.clock.now();
  if (failures.length === 0) {
    const activated = await db.transaction().execute(async (trx) => {
      const rows = await activateBatch(trx, batch);
      if (rows.length !== reserved.length) return undefined;
      await markTasksDone(
        trx,
        reserved.map((entry) => entry.taskId),
        finishedAt,
      );
      await appendEvents(
        trx,
        finishedAt,
        rows.map((rental) => ({ actor: renter.actor, kind: 'rental.started', subjectType: 'rental', subjectId: rental.id })),
      );
      return rows;
    });
    if (activated) {
      const byId = new Map(activated.map((rental) => [rental.id, rental]));
      return reserved.map(({ rental, worker }) => ({ rental: byId.get(rental.id) as RentalRow, worker, password }));
    }
    await failBatch(db, batch, 'ended while being provisioned', config.taskMaxAttempts, finishedAt);
    throw new AppError('PROVISIONING_FAILED', 'The rental was ended while its workers were being provisioned; nothing was rented.');
  }
  const reason = failures.map(({ worker, error }) => `${worker.name}: ${error.message}`).join('; ');
  await failBatch(db, batch, `provisioning failed: ${reason}`, config.taskMaxAttempts, finishedAt);
  for (const { worker, error } of failures) await quarantineForHostKey(db, worker.id, error, finishedAt);
  throw new AppError(
    'PROVISIONING_FAILED',
    `Provisioning failed on ${failures.length} of ${reserved.length} worker${reserved.length === 1 ? '' : 's'} (${reason}); nothing was rented and the others are being cleaned up. Try again.`,
  );
}

/**
 * The transaction of `rentWorkers`: the renter's quotas, then `count` free workers beyond those
 * reserved by schedules, each rental provisioning with its task queued as running (this request
 * runs it).
 */
async function reserveBatch(db: Db, deps: LeasingDeps, renter: Renter, input: RentInput, batch: { batch: string; passwordHash: string }, now: number) {
  // A provisioning run that outlives this is presumed dead (its instance stopped) and rolled back by the task loop.
  const lockUntil = now + 2 * deps.config.sshTimeoutMs;
  return retryOnUniqueViolation(deps.dialect, () =>
    db.transaction().execute(async (trx) => {
      // A reserve schedule's window is checked again as it opens: its rentals are what the user holds.
      const subject =
        input.scheduleId === undefined
          ? `Renting ${input.count} worker${input.count === 1 ? '' : 's'} for ${hoursOf(input.durationMs)} hours`
          : `Schedule ${input.scheduleId}'s window of ${input.count} worker${input.count === 1 ? '' : 's'}`;
      await checkUserQuotas(
        trx,
        deps.dialect,
        deps.config,
        { owner: renter, added: [{ from: now, until: now + input.durationMs, workers: input.count }], subject },
        now,
      );
      const reserved = input.scheduleId === undefined ? await reservedWorkers(trx, now, now + input.durationMs) : 0;
      const picked = await pickFreeWorkers(trx, deps.dialect, input.count + reserved);
      const workers = picked.slice(0, input.count);
      if (picked.length < input.count + reserved) {
        const free = Math.max(0, (await countFreeWorkers(trx)) - reserved);
        const held = reserved > 0 ? ` (${reserved} more are reserved by schedules during that time)` : '';
        throw new AppError(
          'NOT_ENOUGH_WORKERS',
          `${input.count} worker${input.count === 1 ? '' : 's'} requested, ${free} free${held}; nothing was rented. Try a smaller count, a shorter time, or later.`,
          { free },
        );
      }
      const rentals = await insertBatch(
        trx,
        { ...batch, userId: renter.userId, leasedUntil: now + input.durationMs, scheduleId: input.scheduleId ?? null },
        workers.map((worker) => ({ nodeId: worker.id, account: generateAccountName() })),
        now,
      );
      const byNode = new Map(workers.map((worker) => [worker.id, worker]));
      const pairs = rentals.map((rental) => ({ rental, worker: byNode.get(rental.node_id) as WorkerRow }));
      const tasks = await queueTasks(
        trx,
        pairs.map(({ rental, worker }) => provisionTask(rental, worker, 'rent', 1)),
        now,
        { runningUntil: lockUntil },
      );
      await appendEvents(
        trx,
        now,
        pairs.map(({ rental, worker }) => ({
          actor: renter.actor,
          kind: 'rental.requested',
          subjectType: 'rental',
          subjectId: rental.id,
          data: { node: worker.name, account: rental.account, batch: batch.batch, leased_until: rental.leased_until },
        })),
      );
      return pairs.map((pair, index) => ({ ...pair, taskId: (tasks[index] as { id: number }).id }));
    }),
  );
}

/**
 * A worker that presents another host key than the pinned one may have been replaced or taken
 * over: nothing more is sent to it until an admin looks (quarantine), and an event says why.
 */
export async function quarantineForHostKey(db: Db, nodeId: number, error: Error, now: number): Promise<boolean> {
  if (!(error instanceof HostKeyMismatchError)) return false;
  await inTransaction(db, async (trx) => {
    if (await quarantineWorker(trx, nodeId, 'host key changed', now)) {
      await appendEvents(trx, now, [
        { actor: 'system', kind: 'worker.host_key_changed', subjectType: 'node', subjectId: nodeId, data: { presented: error.presented } },
      ]);
    }
  });
  return true;
}

/** Every still-provisioning rental of a batch fails; each one's worker gets a cleanup task. */
export async function failBatch(db: Db, batch: string, reason: string, maxAttempts: number, now: number): Promise<number> {
  return inTransaction(db, async (trx) => {
    const failed = await failProvisioningBatch(trx, batch, reason, now);
    if (failed.length === 0) return 0;
    await failProvisionTasks(
      trx,
      failed.map((rental) => rental.id),
      reason,
      now,
    );
    await queueCleanups(trx, failed, maxAttempts, now);
    await appendEvents(
      trx,
      now,
      failed.map((rental) => ({ actor: 'system', kind: 'rental.failed', subjectType: 'rental', subjectId: rental.id, data: { reason } })),
    );
    return failed.length;
  });
}

/** The rental, if this renter may see it; someone else's rental is "not found", like an unknown one. */
export async function findOwnRental(db: Db, renter: Renter, rentalId: number): Promise<RentalRow> {
  const rental = await findRental(db, rentalId);
  if (!rental || (!renter.admin && rental.user_id !== renter.userId)) throw new AppError('RENTAL_NOT_FOUND', `No rental ${rentalId} of yours.`);
  return rental;
}

/** Ends live rentals now and queues their cleanup; each ends once (conditional update), with its event. */
export async function endRentals(
  db: Db,
  where: { ids?: number[]; all?: true },
  end: { reason: string; actor: string; state?: 'ended' | 'failed' },
  maxAttempts: number,
  now: number,
): Promise<RentalRow[]> {
  return inTransaction(db, async (trx) => {
    const ended = await endActiveRentals(trx, where, { state: end.state ?? 'ended', reason: end.reason }, now);
    await queueCleanups(trx, ended, maxAttempts, now);
    const events: NewEvent[] = ended.map((rental) => ({
      actor: end.actor,
      kind: end.state === 'failed' ? 'rental.failed' : 'rental.ended',
      subjectType: 'rental',
      subjectId: rental.id,
      data: { reason: end.reason },
    }));
    await appendEvents(trx, now, events);
    return ended;
  });
}

/** `POST /api/release/{id}`: the renter (or an admin) ends a live rental. */
export async function releaseRental(db: Db, deps: Pick<LeasingDeps, 'config'>, renter: Renter, rentalId: number, now: number): Promise<void> {
  const rental = await findOwnRental(db, renter, rentalId);
  const ended = await endRentals(db, { ids: [rental.id] }, { reason: 'released', actor: renter.actor }, deps.config.taskMaxAttempts, now);
  if (ended.length === 0) throw new AppError('RENTAL_ENDED', `Rental ${rentalId} is not active (it is ${rental.state}); nothing to release.`);
}

/**
 * `POST /api/extend/{id}`: moves the end time later. A rental lasts at most RENT_MAX_HOURS in all;
 * a longer extension is refused with the longest one still possible. The added time counts
 * against the owner's quotas like a new rental.
 */
export async function extendRental(
  db: Db,
  deps: Pick<LeasingDeps, 'dialect' | 'config'>,
  renter: Renter,
  extension: { rentalId: number; additionalMs: number },
  now: number,
): Promise<RentalRow> {
  const { rentalId, additionalMs } = extension;
  const rental = await findOwnRental(db, renter, rentalId);
  if (!WORKER_HOLDING_RENTAL_STATES.includes(rental.state) || rental.leased_until <= now) {
    throw new AppError(
      'RENTAL_ENDED',
      `Rental ${rentalId} is not active (it is ${rental.state === 'active' ? 'expired' : rental.state}); it cannot be extended.`,
    );
  }
  const longestMs = Math.max(0, rental.leased_from + deps.config.rentMaxMs - rental.leased_until);
  if (additionalMs > longestMs) {
    const hours = Math.floor((longestMs / 3_600_000) * 100) / 100;
    throw new AppError(
      'EXTENSION_TOO_LONG',
      `A rental may last at most ${deps.config.rentMaxMs / 3_600_000} hours in all (RENT_MAX_HOURS); the longest extension still possible is ${hours} hours.`,
      { max_additional_hours: hours },
    );
  }
  return db.transaction().execute(async (trx) => {
    await checkUserQuotas(
      trx,
      deps.dialect,
      deps.config,
      {
        owner: { userId: rental.user_id, admin: renter.admin },
        added: [{ from: rental.leased_until, until: rental.leased_until + additionalMs, workers: 1 }],
        subject: `Extending rental ${rental.id} by ${hoursOf(additionalMs)} hours`,
      },
      now,
    );
    const updated = await extendLease(trx, rental, additionalMs);
    if (!updated) throw new AppError('RENTAL_ENDED', `Rental ${rentalId} changed at the same moment (ended or extended); read it again and retry.`);
    await appendEvents(trx, now, [
      {
        actor: renter.actor,
        kind: 'rental.extended',
        subjectType: 'rental',
        subjectId: rental.id,
        data: { from: rental.leased_until, to: updated.leased_until },
      },
    ]);
    return updated;
  });
}

/** The expiry loop: rentals past their end time end and are cleaned up. */
export async function expireRentals(db: Db, deps: Pick<LeasingDeps, 'config'>, now: number): Promise<number> {
  const due = await findDueRentalIds(db, now, 1000);
  if (due.length === 0) return 0;
  const ended = await endRentals(db, { ids: due }, { reason: 'expired', actor: 'system' }, deps.config.taskMaxAttempts, now);
  return ended.length;
}

/**
 * `POST /api/reset` (admin): ends every rental (cleanup queued with each worker's address as it
 * is now) and removes the workers' registrations; they register again through their agents.
 */
export async function resetLeasing(
  db: Db,
  deps: Pick<LeasingDeps, 'config'>,
  actor: string,
  now: number,
): Promise<{ rentalsEnded: number; workersRemoved: number }> {
  const maxAttempts = deps.config.taskMaxAttempts;
  const ended = await endRentals(db, { all: true }, { reason: 'reset', actor }, maxAttempts, now);
  const removed = await db.transaction().execute(async (trx) => {
    // Provisioning in flight is failed too (its request answers with an error).
    for (const batch of await findProvisioningBatches(trx)) await failBatch(trx, batch, 'reset', maxAttempts, now);
    const workers = await removeIdleWorkers(trx);
    await appendEvents(trx, now, [
      {
        actor,
        kind: 'leasing.reset',
        subjectType: 'system',
        subjectId: 'leasing',
        data: { rentals_ended: ended.length, workers_removed: workers.map((worker) => worker.name) },
      },
    ]);
    return workers.length;
  });
  return { rentalsEnded: ended.length, workersRemoved: removed };
}
