import type { Db } from '../db/database.js';
import { queueTasks, type NewTask } from '../tasks/outbox.js';
import type { WorkerTarget } from '../workers/ssh.js';
import type { RentalRow } from './rentals.table.js';
import { findWorker, targetOf, type WorkerRow } from './workers.repository.js';

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

export function deprovisionTask(rental: Pick<RentalRow, 'id' | 'account'>, worker: WorkerRow, maxAttempts: number): NewTask {
  const payload: DeprovisionPayload = { target: targetOf(worker), account: rental.account };
  return { kind: 'deprovision', rentalId: rental.id, nodeId: worker.id, payload, maxAttempts };
}

export function provisionTask(
  rental: Pick<RentalRow, 'id' | 'account' | 'password_hash'>,
  worker: WorkerRow,
  purpose: ProvisionPayload['purpose'],
  maxAttempts: number,
): NewTask {
  const payload: ProvisionPayload = { purpose, target: targetOf(worker), account: rental.account, passwordHash: rental.password_hash };
  return { kind: 'provision', rentalId: rental.id, nodeId: worker.id, payload, maxAttempts };
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
