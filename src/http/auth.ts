import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';
import { hashToken, tokenKind } from '../lib/secrets.js';
import { findNodeByTokenHash } from '../nodes/nodes.repository.js';
import type { Role } from '../users/users.table.js';
import type { AppContext } from './context.js';

export type Principal =
  | { kind: 'user'; userId: number; username: string; role: Role }
  | { kind: 'node'; nodeId: number; nodeName: string };

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

/** How an actor is written in events. */
export function actorOf(principal: Principal): string {
  return principal.kind === 'user' ? `user:${principal.username}` : `node:${principal.nodeName}`;
}

export function bearerToken(request: FastifyRequest): string {
  const header = request.headers.authorization;
  if (!header) throw new AppError('UNAUTHENTICATED', 'Missing Authorization header; send "Authorization: Bearer <token>".');
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) throw new AppError('UNAUTHENTICATED', 'Malformed Authorization header; expected "Bearer <token>".');
  return match[1] as string;
}

/** Resolves the bearer token into a user (JWT) or a node (node token). */
export async function authenticate(ctx: AppContext, token: string, nodeTokens?: NodeTokenCache): Promise<Principal> {
  const kind = tokenKind(token);
  if (kind === 'node') {
    const tokenHash = hashToken(token);
    const node = nodeTokens?.get(tokenHash, ctx.clock.now()) ?? (await findNodeByTokenHash(ctx.db, tokenHash));
    if (!node) throw new AppError('UNAUTHENTICATED', 'Unknown node token.');
    nodeTokens?.set(tokenHash, node, ctx.clock.now());
    return { kind: 'node', nodeId: node.id, nodeName: node.name };
  }
  if (kind === 'enrollment') {
    throw new AppError('FORBIDDEN', 'An enrollment token can only register a node (POST /api/workers/register).');
  }
  const claims = await ctx.jwt.verify(token, ctx.clock.now());
  return { kind: 'user', ...claims };
}

// A node authenticates on every /allocate, /release and /complete. Remembering its token for a few
// seconds spares a database round trip that otherwise queues behind running transactions. The
// price: a node token rotated on another instance keeps working there for up to this long.
const NODE_TOKEN_CACHE_MS = 10_000;
const NODE_TOKEN_CACHE_SIZE = 100_000;

export interface NodeTokenCache {
  get(tokenHash: string, now: number): { id: number; name: string } | undefined;
  set(tokenHash: string, node: { id: number; name: string }, now: number): void;
  /** Drops a node's entries at once (its token was rotated on this instance). */
  forgetNode(nodeId: number): void;
}

export function createNodeTokenCache(): NodeTokenCache {
  const entries = new Map<string, { node: { id: number; name: string }; until: number }>();
  return {
    get(tokenHash, now) {
      const entry = entries.get(tokenHash);
      if (entry && entry.until > now) return entry.node;
      entries.delete(tokenHash);
      return undefined;
    },
    set(tokenHash, node, now) {
      if (entries.has(tokenHash)) return;
      if (entries.size >= NODE_TOKEN_CACHE_SIZE) entries.clear();
      entries.set(tokenHash, { node, until: now + NODE_TOKEN_CACHE_MS });
    },
    forgetNode(nodeId) {
      for (const [tokenHash, entry] of entries) if (entry.node.id === nodeId) entries.delete(tokenHash);
    },
  };
}

export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new Error('route is missing an authentication guard');
  return request.principal;
}

export function isAdmin(principal: Principal): boolean {
  return principal.kind === 'user' && principal.role === 'admin';
}

/** onRequest hooks: authentication runs before the body is even read. */
export function createGuards(ctx: AppContext) {
  const nodeTokens = createNodeTokenCache();
  const guard = (allow: (principal: Principal) => boolean, refusal: string) => async (request: FastifyRequest) => {
    const principal = await authenticate(ctx, bearerToken(request), nodeTokens);
    if (!allow(principal)) throw new AppError('FORBIDDEN', refusal);
    request.principal = principal;
  };
  return {
    nodeTokens,
    any: guard(() => true, ''),
    user: guard((p) => p.kind === 'user', 'This route needs a user token from POST /auth/login.'),
    admin: guard(isAdmin, 'This route is for admins only.'),
    nodeOrAdmin: guard((p) => p.kind === 'node' || isAdmin(p), 'This route needs a node token or an admin token.'),
  };
}

export type Guards = ReturnType<typeof createGuards>;
