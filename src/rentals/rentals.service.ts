import crypto from 'node:crypto';
import { encrypt as cryptSha512 } from 'unixcrypt';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { appendEvents, type NewEvent } from '../events/events.repository.js';
import type { AppContext } from '../http/context.js';
import { queueTasks, type NewTask } from '../tasks/outbox.js';
import { HostKeyMismatchError, runWorkerCommand, type WorkerTarget } from '../workers/ssh.js';
import { reservedWorkers } from '../schedules/reservations.js';
import { checkUserQuotas } from './quotas.service.js';
import { ACTIVE_RENTAL_STATES, LIVE_RENTAL_STATES, type RentalRow } from './rentals.table.js';
import { countFreeWorkers, findWorker, pickFreeWorkers, quarantineWorker, targetOf, type WorkerRow } from './workers.repository.js';

/** Who acts on rentals: a user (admins act on every rental). */
export interface Renter {
  userId: number;
  username: string;
  admin: boolean;
  actor: string;
}

export interface RentedWorker {
  rental: RentalRow;
  worker: WorkerRow;
  password: string;
}

/** What a provisioning or cleanup task carries: the target as it was when queued, and the account. */
export interface ProvisionPayload {
  purpose: 'rent' | 'migrate';
  target: WorkerTarget;
  account: string;
  passwordHash: string;
}

export interface DeprovisionPayload {
  target: WorkerTarget;
  account: string;
}

const ACCOUNT_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
// No look-alikes (0/O, 1/l/I): the password is typed by people.
const PASSWORD_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

const hoursOf = (ms: number) => Math.round((ms / 3_600_000) * 1000) / 1000;

function randomString(alphabet: string, length: number): string {
  return Array.from({ length }, () => alphabet[crypto.randomInt(alphabet.length)]).join('');
}

/** Account names come from here only, never from user input: `rent_` and 8 random characters. */
export function generateAccountName(): string {
  return `rent_${randomString(ACCOUNT_ALPHABET, 8)}`;
}

export function generatePassword(): string {
  return randomString(PASSWORD_ALPHABET, 20);
}

/** A password a renter chose: long enough, varied enough, printable, not their user name. */
export function checkPasswordStrength(password: string, username: string): void {
  const problems: string[] = [];
  if (password.length < 12) problems.push('at least 12 characters');
  if (password.length > 128) problems.push('at most 128 characters');
  if (/[^\x20-\x7e]/.test(password)) problems.push('printable ASCII characters only');
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((pattern) => pattern.test(password)).length;
  if (classes < 3 && password.length < 20) problems.push('three of: lower case, upper case, digits, symbols (or 20 characters or more)');
  if (password.toLowerCase().includes(username.toLowerCase())) problems.push('not containing your user name');
  if (problems.length > 0) {
    throw new AppError('WEAK_PASSWORD', `ssh_password is too weak; it needs ${problems.join('; ')}. Leave it out to get a generated one.`);
  }
}

export function deprovisionTask(rental: Pick<RentalRow, 'id' | 'account'>, worker: WorkerRow, maxAttempts: number): NewTask {
  const payload: DeprovisionPayload = { target: targetOf(worker), account: rental.account };
  return { kind: 'deprovision', rentalId: rental.id, nodeId: worker.id, payload, maxAttempts };
}

export function provisionTask(rental: Pick<RentalRow, 'id' | 'account' | 'password_hash'>, worker: WorkerRow, purpose: ProvisionPayload['purpose'], maxAttempts: number): NewTask {
  const payload: ProvisionPayload = { purpose, target: targetOf(worker), account: rental.account, passwordHash: rental.password_hash };
  return { kind: 'provision', rentalId: rental.id, nodeId: worker.id, payload, maxAttempts };
}

/**
 * `POST /api/rent`: reserves `count` free workers in one transaction (all or none), then
 * provisions every one of them at once, outside the transaction. Only when all are provisioned
 * do the rentals become active and the credentials go back; if any fails, the whole batch fails
 * and whatever was provisioned is cleaned up through the outbox. The renter's quotas are checked
 * in the same transaction (checkUserQuotas), for a reserve schedule's window too.
 */
export async function rentWorkers(
  ctx: AppContext,
  renter: Renter,
  input: { durationMs: number; count: number; password?: string; passwordHash?: string; scheduleId?: number },
): Promise<RentedWorker[]> {
  const { config, clock } = ctx;
  if (input.durationMs > config.rentMaxMs) {
    throw new AppError('VALIDATION_ERROR', `duration_hours may be at most ${config.rentMaxMs / 3_600_000} (RENT_MAX_HOURS).`);
  }
  if (input.count > config.rentMaxCount) throw new AppError('VALIDATION_ERROR', `count may be at most ${config.rentMaxCount} (RENT_MAX_COUNT).`);
  if (input.password !== undefined) checkPasswordStrength(input.password, renter.username);
  // A reserve schedule's rentals come with the hash of the password its owner chose beforehand.
  const password = input.passwordHash ? '' : (input.password ?? generatePassword());
  const passwordHash = input.passwordHash ?? cryptSha512(password);
  const batch = crypto.randomUUID();
  const now = clock.now();
  // A provisioning run that outlives this is presumed dead (its instance stopped) and rolled back by the task loop.
  const lockUntil = now + 2 * config.sshTimeoutMs;

  const reserved = await retryOnUniqueViolation(ctx, () =>
    ctx.db.transaction().execute(async (trx) => {
      // A reserve schedule's window is checked again as it opens: its rentals are what the user holds.
      const subject = input.scheduleId === undefined
        ? `Renting ${input.count} worker${input.count === 1 ? '' : 's'} for ${hoursOf(input.durationMs)} hours`
        : `Schedule ${input.scheduleId}'s window of ${input.count} worker${input.count === 1 ? '' : 's'}`;
      await checkUserQuotas(trx, ctx.dialect, config, { owner: renter, added: [{ from: now, until: now + input.durationMs, workers: input.count }], subject }, now);
      const reserved = input.scheduleId === undefined ? await reservedWorkers(trx, now, now + input.durationMs) : 0;
      const picked = await pickFreeWorkers(trx, ctx.dialect, input.count + reserved);
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
      const rentals = await trx
        .insertInto('rentals')
        .values(
          workers.map((worker) => ({
            user_id: renter.userId,
            node_id: worker.id,
            state: 'provisioning' as const,
            batch,
            account: generateAccountName(),
            password_hash: passwordHash,
            leased_from: now,
            leased_until: now + input.durationMs,
            created_at: now,
            ended_at: null,
            end_reason: null,
            schedule_id: input.scheduleId ?? null,
          })),
        )
        .returningAll()
        .execute();
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
          data: { node: worker.name, account: rental.account, batch, leased_until: rental.leased_until },
        })),
      );
      return pairs.map((pair, index) => ({ ...pair, taskId: (tasks[index] as { id: number }).id }));
    }),
  );

  const outcomes = await Promise.allSettled(
    reserved.map(({ rental, worker }) =>
      runWorkerCommand(targetOf(worker), ctx.provisioningKey, { verb: 'provision', account: rental.account, passwordHash }, config.sshTimeoutMs),
    ),
  );
  const failures = outcomes.flatMap((outcome, index) =>
    outcome.status === 'rejected' ? [{ worker: (reserved[index] as (typeof reserved)[number]).worker, error: outcome.reason as Error }] : [],
  );
  const finishedAt = clock.now();
  if (failures.length === 0) {
    const activated = await ctx.db.transaction().execute(async (trx) => {
      const rows = await trx
        .updateTable('rentals')
        .set({ state: 'active' })
        .where('batch', '=', batch)
        .where('state', '=', 'provisioning')
        .returningAll()
        .execute();
      if (rows.length !== reserved.length) return undefined;
      await trx.updateTable('tasks').set({ state: 'done', locked_until: null, finished_at: finishedAt }).where('id', 'in', reserved.map((entry) => entry.taskId)).execute();
      await appendEvents(trx, finishedAt, rows.map((rental) => ({ actor: renter.actor, kind: 'rental.started', subjectType: 'rental', subjectId: rental.id })));
      return rows;
    });
    if (activated) {
      const byId = new Map(activated.map((rental) => [rental.id, rental]));
      return reserved.map(({ rental, worker }) => ({ rental: byId.get(rental.id) as RentalRow, worker, password }));
    }
    await failBatch(ctx.db, batch, 'ended while being provisioned', config.taskMaxAttempts, finishedAt);
    throw new AppError('PROVISIONING_FAILED', 'The rental was ended while its workers were being provisioned; nothing was rented.');
  }
  const reason = failures.map(({ worker, error }) => `${worker.name}: ${error.message}`).join('; ');
  await failBatch(ctx.db, batch, `provisioning failed: ${reason}`, config.taskMaxAttempts, finishedAt);
  await handleHostKeyMismatches(ctx, failures, finishedAt);
  throw new AppError(
    'PROVISIONING_FAILED',
    `Provisioning failed on ${failures.length} of ${reserved.length} worker${reserved.length === 1 ? '' : 's'} (${reason}); nothing was rented and the others are being cleaned up. Try again.`,
  );
}

async function handleHostKeyMismatches(ctx: AppContext, failures: { worker: WorkerRow; error: Error }[], now: number): Promise<void> {
  for (const { worker, error } of failures) await quarantineForHostKey(ctx.db, worker.id, error, now);
}

/**
 * A worker that presents another host key than the pinned one may have been replaced or taken
 * over: nothing more is sent to it until an admin looks (quarantine), and an event says why.
 */
export async function quarantineForHostKey(db: Db, nodeId: number, error: Error, now: number): Promise<boolean> {
  if (!(error instanceof HostKeyMismatchError)) return false;
  await inTransaction(db, async (trx) => {
    if (await quarantineWorker(trx, nodeId, 'host key changed', now)) {
      await appendEvents(trx, now, [{ actor: 'system', kind: 'worker.host_key_changed', subjectType: 'node', subjectId: nodeId, data: { presented: error.presented } }]);
    }
  });
  return true;
}

/** Runs `work` in the caller's transaction, or in a new one. */
export function inTransaction<T>(db: Db, work: (trx: Db) => Promise<T>): Promise<T> {
  return db.isTransaction ? work(db) : db.transaction().execute(work);
}

/** Every still-provisioning rental of a batch fails; each one's worker gets a cleanup task. */
export async function failBatch(db: Db, batch: string, reason: string, maxAttempts: number, now: number): Promise<number> {
  return inTransaction(db, async (trx) => {
    const failed = await trx
      .updateTable('rentals')
      .set({ state: 'failed', ended_at: now, end_reason: reason.slice(0, 1000) })
      .where('batch', '=', batch)
      .where('state', '=', 'provisioning')
      .returningAll()
      .execute();
    if (failed.length === 0) return 0;
    await trx
      .updateTable('tasks')
      .set({ state: 'failed', locked_until: null, finished_at: now, last_error: reason.slice(0, 1000) })
      .where('kind', '=', 'provision')
      .where('rental_id', 'in', failed.map((rental) => rental.id))
      .where('state', 'in', ['pending', 'running'])
      .execute();
    await queueCleanups(trx, failed, maxAttempts, now);
    await appendEvents(trx, now, failed.map((rental) => ({ actor: 'system', kind: 'rental.failed', subjectType: 'rental', subjectId: rental.id, data: { reason } })));
    return failed.length;
  });
}

/** Queues the removal of each rental's account from the worker it was on. */
export async function queueCleanups(db: Db, rentals: Pick<RentalRow, 'id' | 'account' | 'node_id'>[], maxAttempts: number, now: number): Promise<void> {
  const tasks: NewTask[] = [];
  for (const rental of rentals) {
    const worker = await findWorker(db, rental.node_id);
    if (worker?.ssh_host_key) tasks.push(deprovisionTask(rental, worker, maxAttempts));
  }
  await queueTasks(db, tasks, now);
}

export async function retryOnUniqueViolation<T>(ctx: AppContext, work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      // Another renter took the same worker between our read and our insert: read again.
      if (attempt >= 5 || !ctx.dialect.isUniqueViolation(error)) throw error;
    }
  }
}

/** The rental, if this renter may see it; someone else's rental is "not found", like an unknown one. */
export async function findOwnRental(db: Db, renter: Renter, rentalId: number): Promise<RentalRow> {
  const rental = await db.selectFrom('rentals').selectAll().where('id', '=', rentalId).executeTakeFirst();
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
    let query = trx
      .updateTable('rentals')
      .set({ state: end.state ?? 'ended', ended_at: now, end_reason: end.reason })
      .where('state', 'in', ACTIVE_RENTAL_STATES);
    if (!where.all) query = query.where('id', 'in', where.ids && where.ids.length > 0 ? where.ids : [-1]);
    const ended = await query.returningAll().execute();
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
export async function releaseRental(ctx: AppContext, renter: Renter, rentalId: number): Promise<void> {
  const rental = await findOwnRental(ctx.db, renter, rentalId);
  const ended = await endRentals(ctx.db, { ids: [rental.id] }, { reason: 'released', actor: renter.actor }, ctx.config.taskMaxAttempts, ctx.clock.now());
  if (ended.length === 0) throw new AppError('RENTAL_ENDED', `Rental ${rentalId} is not active (it is ${rental.state}); nothing to release.`);
}

/**
 * `POST /api/extend/{id}`: moves the end time later. A rental lasts at most RENT_MAX_HOURS in all;
 * a longer extension is refused with the longest one still possible. The added time counts
 * against the owner's quotas like a new rental.
 */
export async function extendRental(ctx: AppContext, renter: Renter, rentalId: number, additionalMs: number): Promise<RentalRow> {
  const rental = await findOwnRental(ctx.db, renter, rentalId);
  const now = ctx.clock.now();
  if (!LIVE_RENTAL_STATES.includes(rental.state) || rental.leased_until <= now) {
    throw new AppError('RENTAL_ENDED', `Rental ${rentalId} is not active (it is ${rental.state === 'active' ? 'expired' : rental.state}); it cannot be extended.`);
  }
  const longestMs = Math.max(0, rental.leased_from + ctx.config.rentMaxMs - rental.leased_until);
  if (additionalMs > longestMs) {
    const hours = Math.floor((longestMs / 3_600_000) * 100) / 100;
    throw new AppError(
      'EXTENSION_TOO_LONG',
      `A rental may last at most ${ctx.config.rentMaxMs / 3_600_000} hours in all (RENT_MAX_HOURS); the longest extension still possible is ${hours} hours.`,
      { max_additional_hours: hours },
    );
  }
  return ctx.db.transaction().execute(async (trx) => {
    await checkUserQuotas(
      trx,
      ctx.dialect,
      ctx.config,
      {
        owner: { userId: rental.user_id, admin: renter.admin },
        added: [{ from: rental.leased_until, until: rental.leased_until + additionalMs, workers: 1 }],
        subject: `Extending rental ${rental.id} by ${hoursOf(additionalMs)} hours`,
      },
      now,
    );
    const updated = await trx
      .updateTable('rentals')
      .set({ leased_until: rental.leased_until + additionalMs })
      .where('id', '=', rental.id)
      .where('leased_until', '=', rental.leased_until)
      .where('state', 'in', LIVE_RENTAL_STATES)
      .returningAll()
      .executeTakeFirst();
    if (!updated) throw new AppError('RENTAL_ENDED', `Rental ${rentalId} changed at the same moment (ended or extended); read it again and retry.`);
    await appendEvents(trx, now, [
      { actor: renter.actor, kind: 'rental.extended', subjectType: 'rental', subjectId: rental.id, data: { from: rental.leased_until, to: updated.leased_until } },
    ]);
    return updated;
  });
}

/** The expiry loop: rentals past their end time end and are cleaned up. */
export async function expireRentals(ctx: AppContext, now: number): Promise<number> {
  const due = await ctx.db
    .selectFrom('rentals')
    .select('id')
    .where('state', 'in', ACTIVE_RENTAL_STATES)
    .where('leased_until', '<=', now)
    .limit(1000)
    .execute();
  if (due.length === 0) return 0;
  const ended = await endRentals(ctx.db, { ids: due.map((row) => row.id) }, { reason: 'expired', actor: 'system' }, ctx.config.taskMaxAttempts, now);
  return ended.length;
}

/**
 * `POST /api/reset` (admin): ends every rental (cleanup queued with each worker's address as it
 * is now) and removes the workers' registrations; they register again through their agents.
 */
export async function resetLeasing(ctx: AppContext, actor: string): Promise<{ rentalsEnded: number; workersRemoved: number }> {
  const now = ctx.clock.now();
  const ended = await endRentals(ctx.db, { all: true }, { reason: 'reset', actor }, ctx.config.taskMaxAttempts, now);
  const removed = await ctx.db.transaction().execute(async (trx) => {
    // Provisioning in flight is failed too (its request answers with an error).
    const batches = await trx.selectFrom('rentals').select('batch').distinct().where('state', '=', 'provisioning').execute();
    for (const { batch } of batches) await failBatch(trx, batch, 'reset', ctx.config.taskMaxAttempts, now);
    const workers = await trx
      .deleteFrom('nodes')
      .where('ssh_host_key', 'is not', null)
      .where((eb) => eb.not(eb.exists(eb.selectFrom('allocations').select('allocations.id').whereRef('allocations.node_id', '=', 'nodes.id'))))
      .returning(['id', 'name'])
      .execute();
    await appendEvents(trx, now, [{ actor, kind: 'leasing.reset', subjectType: 'system', subjectId: 'leasing', data: { rentals_ended: ended.length, workers_removed: workers.map((worker) => worker.name) } }]);
    return workers.length;
  });
  return { rentalsEnded: ended.length, workersRemoved: removed };
}
