import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import type { NodeRow } from './nodes.table.js';

export async function findNodeByName(db: Db, name: string): Promise<NodeRow | undefined> {
  return db.selectFrom('nodes').selectAll().where('name', '=', name).executeTakeFirst();
}

export async function findNodeById(db: Db, id: number): Promise<NodeRow | undefined> {
  return db.selectFrom('nodes').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findNodeByTokenHash(db: Db, tokenHash: string): Promise<{ id: number; name: string } | undefined> {
  return db.selectFrom('nodes').select(['id', 'name']).where('token_hash', '=', tokenHash).executeTakeFirst();
}

export interface NewNode {
  name: string;
  hostname: string;
  ip: string | null;
  sshPort: number | null;
  tags: Record<string, string>;
  tokenHash: string | null;
  now: number;
}

/** Inserts a node; returns undefined when the name is already taken. */
export async function insertNode(db: Db, node: NewNode): Promise<NodeRow | undefined> {
  return db
    .insertInto('nodes')
    .values({
      name: node.name,
      hostname: node.hostname,
      ip: node.ip,
      ssh_port: node.sshPort,
      status: 'unknown',
      probe_failures: 0,
      tags: JSON.stringify(node.tags),
      token_hash: node.tokenHash,
      created_at: node.now,
    })
    .onConflict((conflict) => conflict.column('name').doNothing())
    .returningAll()
    .executeTakeFirst();
}

export async function updateNodeAddress(
  db: Db,
  id: number,
  address: { hostname: string; ip: string | null; sshPort: number | null; tags?: Record<string, string>; tokenHash?: string },
): Promise<void> {
  await db
    .updateTable('nodes')
    .set({
      hostname: address.hostname,
      ip: address.ip,
      ssh_port: address.sshPort,
      ...(address.tags ? { tags: JSON.stringify(address.tags) } : {}),
      ...(address.tokenHash ? { token_hash: address.tokenHash } : {}),
    })
    .where('id', '=', id)
    .execute();
}

/** Counts a use of an enrollment token if it exists and has not expired. */
export async function useEnrollmentToken(db: Db, tokenHash: string, now: number): Promise<boolean> {
  const used = await db
    .updateTable('enrollment_tokens')
    .set((eb) => ({ uses: eb('uses', '+', 1) }))
    .where('token_hash', '=', tokenHash)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .returning('id')
    .executeTakeFirst();
  return used !== undefined;
}

/** Every node (or one), with its count of active allocations. */
export async function listNodes(db: Db, onlyId?: number) {
  let query = db
    .selectFrom('nodes')
    .selectAll('nodes')
    .select(sql<number>`(select count(*) from allocations where allocations.node_id = nodes.id and allocations.state = 'active')`.as('active_allocations'))
    .orderBy('nodes.id');
  if (onlyId !== undefined) query = query.where('nodes.id', '=', onlyId);
  return query.execute();
}
