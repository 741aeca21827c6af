import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { constantTimeEqual, generateToken, hashToken } from '../lib/secrets.js';
import { findNodeById, findNodeByName, insertNode, updateNodeAddress, useEnrollmentToken, type WorkerIdentity } from './nodes.repository.js';
import type { NodeRow } from './nodes.table.js';

/** Who is registering: a holder of an enrollment token, a node with its own token, or an admin. */
export type RegistrationCredential =
  | { kind: 'enrollment'; actor: string }
  | { kind: 'node'; nodeId: number; token: string; actor: string }
  | { kind: 'admin'; actor: string };

export interface Registration {
  hostname: string;
  ip: string | null;
  sshPort: number | null;
  /** The seeds' node id: a name (string) or Orion's integer id. */
  nodeId?: string | number;
  tags?: Record<string, string>;
  /** Workers only: the SSH host key (canonical) and the provisioning account. */
  worker?: WorkerIdentity;
}

export interface RegistrationResult {
  created: boolean;
  node: NodeRow;
  /** Null when nothing was issued: an enrollment token's holder registering the same machine again. */
  nodeToken: string | null;
}

export const REGISTERED_MESSAGE = 'Worker enregistré avec succès';
export const ALREADY_REGISTERED_MESSAGE = 'Worker déjà enregistré';

/**
 * Registers a node or refreshes an existing one. A node token can only refresh its own node; an
 * enrollment token can only create new names (taking over an existing node needs its token or an
 * admin); an admin may do both, and re-registering rotates the node's token.
 */
export async function registerNode(db: Db, input: Registration, credential: RegistrationCredential, now: number): Promise<RegistrationResult> {
  const address = { hostname: input.hostname, ip: input.ip, sshPort: input.sshPort, tags: input.tags, worker: input.worker };
  return db.transaction().execute(async (trx) => {
    const existing = await findRegisteredNode(trx, input);
    if (credential.kind === 'node') {
      if (existing && existing.id !== credential.nodeId) {
        throw new AppError('FORBIDDEN', 'This node token belongs to another node.');
      }
      const own = existing ?? (await findNodeById(trx, credential.nodeId));
      // Trust on first use: once pinned, a host key changes only through an admin's re-registration.
      if (input.worker && own?.ssh_host_key && own.ssh_host_key !== input.worker.hostKey) {
        throw new AppError(
          'HOST_KEY_CHANGED',
          'This worker reports another SSH host key than the one pinned at its registration; it is quarantined. If the change is expected, an admin re-registers it.',
          { node_id: own.id, presented: input.worker.hostKey },
        );
      }
      await updateNodeAddress(trx, credential.nodeId, address);
      await appendEvents(trx, now, [{ actor: credential.actor, kind: 'node.reregistered', subjectType: 'node', subjectId: credential.nodeId, data: address }]);
      const node = await findNodeById(trx, credential.nodeId);
      return { created: false, node: node as NodeRow, nodeToken: credential.token };
    }
    if (existing) {
      // Seed 003's agent registers again, with the same body, at every boot: the same machine gets
      // its answer and nothing changes; no token is issued, so nobody takes a node over this way.
      if (credential.kind === 'enrollment' && isSameMachine(existing, input)) return { created: false, node: existing, nodeToken: null };
      if (credential.kind === 'enrollment') {
        throw new AppError(
          'NODE_NAME_TAKEN',
          `A node named "${existing.name}" is already registered. Register with its node token, or choose another name (node_id).`,
        );
      }
      const nodeToken = generateToken('node');
      // An admin's re-registration may pin a new host key (a reinstalled worker).
      await updateNodeAddress(trx, existing.id, { ...address, tokenHash: hashToken(nodeToken) });
      await appendEvents(trx, now, [{ actor: credential.actor, kind: 'node.token_rotated', subjectType: 'node', subjectId: existing.id, data: address }]);
      return { created: false, node: (await findNodeById(trx, existing.id)) as NodeRow, nodeToken };
    }
    if (typeof input.nodeId === 'number') throw new AppError('NODE_NOT_FOUND', `No node has id ${input.nodeId}.`);
    const nodeToken = generateToken('node');
    const node = await insertNode(trx, {
      name: input.nodeId ?? input.hostname,
      ...address,
      tags: input.tags ?? {},
      tokenHash: hashToken(nodeToken),
      now,
      worker: input.worker,
    });
    if (!node) throw new AppError('NODE_NAME_TAKEN', `A node named "${input.nodeId ?? input.hostname}" was registered at the same moment.`);
    await appendEvents(trx, now, [{ actor: credential.actor, kind: 'node.created', subjectType: 'node', subjectId: node.id, data: { name: node.name, ...address } }]);
    return { created: true, node, nodeToken };
  });
}

function isSameMachine(node: NodeRow, input: Registration): boolean {
  return node.hostname === input.hostname && node.ip === input.ip && node.ssh_port === input.sshPort && (input.worker === undefined || input.worker.hostKey === node.ssh_host_key);
}

function findRegisteredNode(db: Db, input: Registration): Promise<NodeRow | undefined> {
  return typeof input.nodeId === 'number' ? findNodeById(db, input.nodeId) : findNodeByName(db, input.nodeId ?? input.hostname);
}

/** The node an admin names in `/allocate`, created on first sight (seed behaviour for unknown node ids). */
export async function findOrCreateNode(db: Db, name: string, actor: string, now: number): Promise<{ id: number; name: string }> {
  const existing = await findNodeByName(db, name);
  if (existing) return existing;
  const created = await insertNode(db, { name, hostname: name, ip: null, sshPort: null, tags: {}, tokenHash: null, now });
  if (!created) return (await findNodeByName(db, name)) as NodeRow;
  await appendEvents(db, now, [{ actor, kind: 'node.created', subjectType: 'node', subjectId: created.id, data: { name } }]);
  return created;
}

export async function createEnrollmentToken(
  db: Db,
  input: { createdBy: number | null; actor: string; note: string | null; expiresAt: number | null; now: number },
): Promise<{ id: number; token: string; expiresAt: number | null }> {
  const token = generateToken('enrollment');
  const row = await db
    .insertInto('enrollment_tokens')
    .values({ token_hash: hashToken(token), note: input.note, created_by: input.createdBy, created_at: input.now, expires_at: input.expiresAt, uses: 0 })
    .returning('id')
    .executeTakeFirstOrThrow();
  await appendEvents(db, input.now, [
    { actor: input.actor, kind: 'enrollment_token.issued', subjectType: 'enrollment_token', subjectId: row.id, data: { note: input.note, expires_at: input.expiresAt } },
  ]);
  return { id: row.id, token, expiresAt: input.expiresAt };
}

/** Whether `token` is NODE_ENROLLMENT_TOKEN or a live token issued by an admin. */
export async function acceptEnrollmentToken(db: Db, token: string, configured: string | undefined, now: number): Promise<boolean> {
  if (configured !== undefined && constantTimeEqual(token, configured)) return true;
  return useEnrollmentToken(db, hashToken(token), now);
}

