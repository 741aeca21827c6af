import { toIso } from '../clock.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { constantTimeEqual, generateToken, hashToken } from '../lib/secrets.js';
import {
  claimEnrollmentTokenUse,
  findEnrollmentTokenByHash,
  findEnrollmentTokenById,
  findNodeById,
  findNodeByName,
  findOtherProvenWorker,
  insertEnrollmentToken,
  insertNode,
  listEnrollmentTokens as listEnrollmentTokenRows,
  markEnrollmentTokenRevoked,
  markNodeApproved,
  updateNodeAddress,
  type WorkerIdentity,
} from './nodes.repository.js';
import type { EnrollmentTokenRow, NodeRow } from './nodes.table.js';

/**
 * Who is registering: a holder of an enrollment token (`tokenId` null for NODE_ENROLLMENT_TOKEN),
 * a node with its own token, or an admin.
 */
export type RegistrationCredential =
  | { kind: 'enrollment'; tokenId: number | null; actor: string }
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
  /** A new worker waits for an admin's approval before it is rented (WORKER_APPROVAL=admin). */
  awaitsApproval?: boolean;
  /**
   * WORKER_ADDRESS=connection, for a registrant that is not an admin: a worker is reached at the
   * address the request came from (`connectionIp`), never at another `ip` it names.
   */
  ownAddressOnly?: { connectionIp: string };
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
 * admin); an admin may do both, and re-registering rotates the node's token. A node created with
 * an enrollment token counts as one of its uses; registering the same machine again does not.
 */
export async function registerNode(db: Db, input: Registration, credential: RegistrationCredential, now: number): Promise<RegistrationResult> {
  const address = { hostname: input.hostname, ip: input.ip, sshPort: input.sshPort, tags: input.tags, worker: input.worker };
  return db.transaction().execute(async (trx) => {
    const existing = await findRegisteredNode(trx, input);
    const target = credential.kind === 'node' ? (existing ?? (await findNodeById(trx, credential.nodeId))) : existing;
    await checkWorkerIdentity(trx, input, target);
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
      await updateNodeAddress(trx, credential.nodeId, address, { resetApproval: input.awaitsApproval });
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
    const enrollmentTokenId = credential.kind === 'enrollment' ? credential.tokenId : null;
    const operatorId = enrollmentTokenId === null ? null : await claimEnrollmentUse(trx, enrollmentTokenId, now);
    const nodeToken = generateToken('node');
    const node = await insertNode(trx, {
      name: input.nodeId ?? input.hostname,
      ...address,
      tags: input.tags ?? {},
      tokenHash: hashToken(nodeToken),
      now,
      worker: input.worker,
      // Every node: one registered without a host key may become a worker by registering again.
      approved: !input.awaitsApproval,
      operatorId,
    });
    if (!node) throw new AppError('NODE_NAME_TAKEN', `A node named "${input.nodeId ?? input.hostname}" was registered at the same moment.`);
    const data = { name: node.name, ...address, ...(enrollmentTokenId === null ? {} : { enrollment_token_id: enrollmentTokenId, operator_id: operatorId }) };
    await appendEvents(trx, now, [{ actor: credential.actor, kind: 'node.created', subjectType: 'node', subjectId: node.id, data }]);
    return { created: true, node, nodeToken };
  });
}

/**
 * What a worker (a node with an SSH host key, or one becoming one) may claim: to be reached at the
 * address it registers from (WORKER_ADDRESS=connection), and a host key and address no other
 * worker has proven. Host keys are public, so a second node with another machine's key or address
 * would have that machine's rentals provisioned on it; an unproven claim blocks nobody, since only
 * the machine holding the key can prove it.
 */
async function checkWorkerIdentity(db: Db, input: Registration, target: NodeRow | undefined): Promise<void> {
  const hostKey = input.worker?.hostKey ?? target?.ssh_host_key ?? null;
  if (hostKey === null) return;
  if (input.ownAddressOnly && input.ip !== input.ownAddressOnly.connectionIp) {
    throw new AppError(
      'WORKER_ADDRESS_NOT_OWN',
      `A worker registers from the address it is reached on: this request came from ${input.ownAddressOnly.connectionIp}, not ${input.ip}. Leave out ip, register from that address, or ask an admin to register the worker (or to set WORKER_ADDRESS=declared for workers behind NAT).`,
    );
  }
  const other = await findOtherProvenWorker(db, { hostKey, ip: input.ip, sshPort: input.sshPort }, target?.id);
  if (other?.ssh_host_key === hostKey) {
    throw new AppError(
      'HOST_KEY_TAKEN',
      'Another worker has proven this SSH host key. Each worker registers its own key; if this machine replaced that node, an admin deletes the old one first.',
    );
  }
  if (other) {
    throw new AppError(
      'WORKER_ADDRESS_TAKEN',
      `Another worker has proven its host key at ${input.ip}:${input.sshPort}: one machine is one worker, whichever of its host keys it reports. If this machine replaced that node, an admin deletes the old one first.`,
    );
  }
}

function isSameMachine(node: NodeRow, input: Registration): boolean {
  return (
    node.hostname === input.hostname &&
    node.ip === input.ip &&
    node.ssh_port === input.sshPort &&
    (input.worker === undefined || input.worker.hostKey === node.ssh_host_key)
  );
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

/**
 * WORKER_APPROVAL=admin: lets a worker be rented (once its host key is proven too). Approving an
 * approved node changes nothing.
 */
export async function approveNode(db: Db, input: { ref: number | string; actor: string; now: number }): Promise<{ node: NodeRow; approved: boolean }> {
  return db.transaction().execute(async (trx) => {
    const node = typeof input.ref === 'number' ? await findNodeById(trx, input.ref) : await findNodeByName(trx, input.ref);
    if (!node) throw new AppError('NODE_NOT_FOUND', `No node ${typeof input.ref === 'number' ? `has id ${input.ref}` : `is named "${input.ref}"`}.`);
    const approved = await markNodeApproved(trx, node.id, input.now);
    if (approved) await appendEvents(trx, input.now, [{ actor: input.actor, kind: 'node.approved', subjectType: 'node', subjectId: node.id }]);
    return { node: (await findNodeById(trx, node.id)) as NodeRow, approved };
  });
}

export const ENROLLMENT_TOKEN_STATES = ['active', 'revoked', 'expired', 'used_up'] as const;
export type EnrollmentTokenState = (typeof ENROLLMENT_TOKEN_STATES)[number];

/** Whether a token may register a node: the rule `claimEnrollmentTokenUse` applies in one statement. */
export function enrollmentTokenState(token: Pick<EnrollmentTokenRow, 'revoked_at' | 'expires_at' | 'uses' | 'max_uses'>, now: number): EnrollmentTokenState {
  if (token.revoked_at !== null) return 'revoked';
  if (token.expires_at !== null && token.expires_at <= now) return 'expired';
  if (token.max_uses !== null && token.uses >= token.max_uses) return 'used_up';
  return 'active';
}

/** An enrollment token as listed: never the token itself (only its hash is stored anyway). */
export interface EnrollmentToken {
  id: number;
  note: string | null;
  createdAt: number;
  expiresAt: number | null;
  uses: number;
  maxUses: number | null;
  revokedAt: number | null;
  state: EnrollmentTokenState;
  /** The operator of the nodes it registers. */
  operatorId: number | null;
}

function toEnrollmentToken(row: EnrollmentTokenRow, now: number): EnrollmentToken {
  return {
    id: row.id,
    note: row.note,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    uses: row.uses,
    maxUses: row.max_uses,
    revokedAt: row.revoked_at,
    state: enrollmentTokenState(row, now),
    operatorId: row.operator_id ?? row.created_by,
  };
}

/** When a token created now expires: after `expiresInHours`, else after ENROLLMENT_TOKEN_TTL_HOURS. */
export function enrollmentTokenExpiry(now: number, expiresInHours: number | undefined, defaultTtlMs: number): number {
  return now + (expiresInHours === undefined ? defaultTtlMs : Math.round(expiresInHours * 3_600_000));
}

export async function createEnrollmentToken(
  db: Db,
  input: {
    createdBy: number | null;
    /** A personal token: the user its nodes belong to (else they belong to `createdBy`). */
    operatorId?: number | null;
    actor: string;
    note: string | null;
    expiresAt: number | null;
    maxUses?: number | null;
    now: number;
  },
): Promise<{ id: number; token: string; expiresAt: number | null; maxUses: number | null }> {
  const token = generateToken('enrollment');
  const maxUses = input.maxUses ?? null;
  const row = await insertEnrollmentToken(db, {
    tokenHash: hashToken(token),
    note: input.note,
    createdBy: input.createdBy,
    operatorId: input.operatorId ?? null,
    now: input.now,
    expiresAt: input.expiresAt,
    maxUses,
  });
  await appendEvents(db, input.now, [
    {
      actor: input.actor,
      kind: 'enrollment_token.issued',
      subjectType: 'enrollment_token',
      subjectId: row.id,
      data: { note: input.note, expires_at: input.expiresAt, max_uses: maxUses, operator_id: input.operatorId ?? input.createdBy },
    },
  ]);
  return { id: row.id, token, expiresAt: row.expires_at, maxUses };
}

export async function listEnrollmentTokens(db: Db, page: { before?: number; limit: number }, now: number): Promise<EnrollmentToken[]> {
  return (await listEnrollmentTokenRows(db, page)).map((row) => toEnrollmentToken(row, now));
}

/** Revokes a token at once on every instance (nothing caches enrollment tokens); revoking it again changes nothing. */
export async function revokeEnrollmentToken(db: Db, input: { id: number; actor: string; now: number }): Promise<EnrollmentToken> {
  return db.transaction().execute(async (trx) => {
    const revoked = await markEnrollmentTokenRevoked(trx, input.id, input.now);
    const row = revoked ?? (await findEnrollmentTokenById(trx, input.id));
    if (!row) throw new AppError('ENROLLMENT_TOKEN_NOT_FOUND', `No enrollment token has id ${input.id}.`);
    if (revoked) {
      await appendEvents(trx, input.now, [
        { actor: input.actor, kind: 'enrollment_token.revoked', subjectType: 'enrollment_token', subjectId: row.id, data: { note: row.note } },
      ]);
    }
    return toEnrollmentToken(row, input.now);
  });
}

/**
 * The enrollment credential `token` is, if any: NODE_ENROLLMENT_TOKEN, or a token issued by an
 * admin that is neither revoked nor expired. A used-up token still passes here: the machines it
 * registered may register again (seed 003's agent does at every boot), but it creates no node.
 */
export async function checkEnrollmentToken(db: Db, token: string, configured: string | undefined, now: number): Promise<{ tokenId: number | null }> {
  if (configured !== undefined && constantTimeEqual(token, configured)) return { tokenId: null };
  const row = await findEnrollmentTokenByHash(db, hashToken(token));
  if (!row) throw new AppError('UNAUTHENTICATED', 'Unknown enrollment token.');
  const state = enrollmentTokenState(row, now);
  if (state === 'revoked' || state === 'expired') throw refusalOf(row, state);
  return { tokenId: row.id };
}

/** One use of the token: the operator of the node it registers; refused when the token is no longer valid. */
async function claimEnrollmentUse(db: Db, tokenId: number, now: number): Promise<number | null> {
  const claimed = await claimEnrollmentTokenUse(db, tokenId, now);
  if (claimed) return claimed.operatorId;
  const row = await findEnrollmentTokenById(db, tokenId);
  if (!row) throw new AppError('UNAUTHENTICATED', 'Unknown enrollment token.');
  throw refusalOf(row, enrollmentTokenState(row, now));
}

function refusalOf(row: EnrollmentTokenRow, state: EnrollmentTokenState): AppError {
  const ask = 'ask an admin for a new one.';
  const detail =
    state === 'revoked'
      ? `This enrollment token was revoked at ${toIso(row.revoked_at)}; ${ask}`
      : state === 'expired'
        ? `This enrollment token expired at ${toIso(row.expires_at)}; ${ask}`
        : `This enrollment token is used up: it has registered its ${row.max_uses} node(s) (max_uses); ${ask}`;
  return new AppError('UNAUTHENTICATED', detail);
}
