import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import type { EnrollmentTokenRow, NodeRow } from './nodes.table.js';

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
  worker?: WorkerIdentity;
  /** False: a worker that waits for an admin's approval (WORKER_APPROVAL=admin). */
  approved?: boolean;
  /** The user behind it (its enrollment token's); null: it counts as its own operator. */
  operatorId?: number | null;
}

/** What a worker reports to be provisioned over SSH: its host key (pinned) and the provisioning account. */
export interface WorkerIdentity {
  hostKey: string;
  user: string;
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
      ssh_host_key: node.worker?.hostKey ?? null,
      ssh_user: node.worker?.user ?? null,
      approved_at: node.approved === false ? null : node.now,
      operator_id: node.operatorId ?? null,
    })
    .onConflict((conflict) => conflict.column('name').doNothing())
    .returningAll()
    .executeTakeFirst();
}

/**
 * A node's new address and identity. A worker whose address or host key changes must prove its
 * host key again before it is probed or rented (host_key_verified_at back to null).
 */
export async function updateNodeAddress(
  db: Db,
  id: number,
  address: { hostname: string; ip: string | null; sshPort: number | null; tags?: Record<string, string>; tokenHash?: string; worker?: WorkerIdentity },
  options: { resetApproval?: boolean } = {},
): Promise<void> {
  await db
    .updateTable('nodes')
    .set((eb) => {
      const unchanged = eb.and([
        eb('ip', address.ip === null ? 'is' : '=', address.ip),
        eb('ssh_port', address.sshPort === null ? 'is' : '=', address.sshPort),
        ...(address.worker ? [eb('ssh_host_key', '=', address.worker.hostKey)] : []),
      ]);
      return {
        hostname: address.hostname,
        ip: address.ip,
        ssh_port: address.sshPort,
        ...(address.tags ? { tags: JSON.stringify(address.tags) } : {}),
        ...(address.tokenHash ? { token_hash: address.tokenHash } : {}),
        ...(address.worker ? { ssh_host_key: address.worker.hostKey, ssh_user: address.worker.user } : {}),
        host_key_verified_at: eb.case().when(unchanged).then(eb.ref('host_key_verified_at')).else(null).end(),
        // WORKER_APPROVAL=admin: an admin approved this machine at this address, not another.
        ...(options.resetApproval ? { approved_at: eb.case().when(unchanged).then(eb.ref('approved_at')).else(null).end() } : {}),
      };
    })
    .where('id', '=', id)
    .execute();
}

/**
 * Another worker that proved this host key, or proved its key at this address: one machine has
 * several host keys (sshd keeps RSA, ECDSA and Ed25519 ones), so one address is one worker too.
 */
export async function findOtherProvenWorker(
  db: Db,
  worker: { hostKey: string; ip: string | null; sshPort: number | null },
  exceptId: number | undefined,
): Promise<{ id: number; ssh_host_key: string | null } | undefined> {
  return db
    .selectFrom('nodes')
    .select(['id', 'ssh_host_key'])
    .where('host_key_verified_at', 'is not', null)
    .where((eb) =>
      eb.or([
        eb('ssh_host_key', '=', worker.hostKey),
        ...(worker.ip !== null && worker.sshPort !== null ? [eb.and([eb('ip', '=', worker.ip), eb('ssh_port', '=', worker.sshPort)])] : []),
      ]),
    )
    .$if(exceptId !== undefined, (q) => q.where('id', '<>', exceptId as number))
    .executeTakeFirst();
}

/** Makes a node rentable under WORKER_APPROVAL=admin; false when it already was. */
export async function markNodeApproved(db: Db, id: number, now: number): Promise<boolean> {
  const row = await db.updateTable('nodes').set({ approved_at: now }).where('id', '=', id).where('approved_at', 'is', null).returning('id').executeTakeFirst();
  return row !== undefined;
}

export async function insertEnrollmentToken(
  db: Db,
  token: {
    tokenHash: string;
    note: string | null;
    createdBy: number | null;
    operatorId?: number | null;
    now: number;
    expiresAt: number | null;
    maxUses: number | null;
  },
): Promise<EnrollmentTokenRow> {
  return db
    .insertInto('enrollment_tokens')
    .values({
      token_hash: token.tokenHash,
      note: token.note,
      created_by: token.createdBy,
      operator_id: token.operatorId ?? null,
      created_at: token.now,
      expires_at: token.expiresAt,
      uses: 0,
      max_uses: token.maxUses,
      revoked_at: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findEnrollmentTokenByHash(db: Db, tokenHash: string): Promise<EnrollmentTokenRow | undefined> {
  return db.selectFrom('enrollment_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
}

export async function findEnrollmentTokenById(db: Db, id: number): Promise<EnrollmentTokenRow | undefined> {
  return db.selectFrom('enrollment_tokens').selectAll().where('id', '=', id).executeTakeFirst();
}

/**
 * Counts a node registered with the token, if it is still live: not revoked, not expired, not used
 * up. One conditional statement, so concurrent registrations never exceed `max_uses`.
 */
/** Counts one use of a token still valid; the operator of the nodes it registers (its own, else its creator), or undefined when it is not valid. */
export async function claimEnrollmentTokenUse(db: Db, id: number, now: number): Promise<{ operatorId: number | null } | undefined> {
  const claimed = await db
    .updateTable('enrollment_tokens')
    .set((eb) => ({ uses: eb('uses', '+', 1) }))
    .where('id', '=', id)
    .where('revoked_at', 'is', null)
    .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
    .where((eb) => eb.or([eb('max_uses', 'is', null), eb('uses', '<', eb.ref('max_uses'))]))
    .returning(['operator_id', 'created_by'])
    .executeTakeFirst();
  if (!claimed) return undefined;
  const operator = claimed.operator_id ?? claimed.created_by;
  return { operatorId: operator === null ? null : Number(operator) };
}

/** Revokes the token; undefined when there is no such token or it was already revoked. */
export async function markEnrollmentTokenRevoked(db: Db, id: number, now: number): Promise<EnrollmentTokenRow | undefined> {
  return db.updateTable('enrollment_tokens').set({ revoked_at: now }).where('id', '=', id).where('revoked_at', 'is', null).returningAll().executeTakeFirst();
}

/** Enrollment tokens, newest first, before the id `before` when given. */
export async function listEnrollmentTokens(db: Db, page: { before?: number; limit: number }): Promise<EnrollmentTokenRow[]> {
  return db
    .selectFrom('enrollment_tokens')
    .selectAll()
    .$if(page.before !== undefined, (q) => q.where('id', '<', page.before as number))
    .orderBy('id', 'desc')
    .limit(page.limit)
    .execute();
}

/** Every node (or one), with its count of active allocations. */
export async function listNodes(db: Db, onlyIds?: number[], operator?: string) {
  let query = db
    .selectFrom('nodes')
    .leftJoin('users', 'users.id', 'nodes.operator_id')
    .selectAll('nodes')
    .select('users.username as operator')
    .select(sql<number>`(select count(*) from allocations where allocations.node_id = nodes.id and allocations.state = 'active')`.as('active_allocations'))
    .orderBy('nodes.id');
  if (onlyIds !== undefined) query = query.where('nodes.id', 'in', onlyIds.length > 0 ? onlyIds : [-1]);
  if (operator !== undefined) query = query.where('users.username', '=', operator);
  return query.execute();
}

/** Each node's latest rental (the live one, or how the last one ended), optionally only a user's. */
export async function latestRentals(db: Db, onlyUserId?: number) {
  const latest = db
    .selectFrom('rentals')
    .select((eb) => eb.fn.max('id').as('id'))
    .groupBy('node_id');
  return db
    .selectFrom('rentals')
    .selectAll()
    .where('id', 'in', latest)
    .$if(onlyUserId !== undefined, (q) => q.where('user_id', '=', onlyUserId as number))
    .execute();
}
