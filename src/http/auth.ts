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
export async function authenticate(ctx: AppContext, token: string): Promise<Principal> {
  const kind = tokenKind(token);
  if (kind === 'node') {
    const node = await findNodeByTokenHash(ctx.db, hashToken(token));
    if (!node) throw new AppError('UNAUTHENTICATED', 'Unknown node token.');
    return { kind: 'node', nodeId: node.id, nodeName: node.name };
  }
  if (kind === 'enrollment') {
    throw new AppError('FORBIDDEN', 'An enrollment token can only register a node (POST /api/workers/register).');
  }
  const claims = await ctx.jwt.verify(token, ctx.clock.now());
  return { kind: 'user', ...claims };
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
  const guard = (allow: (principal: Principal) => boolean, refusal: string) => async (request: FastifyRequest) => {
    const principal = await authenticate(ctx, bearerToken(request));
    if (!allow(principal)) throw new AppError('FORBIDDEN', refusal);
    request.principal = principal;
  };
  return {
    any: guard(() => true, ''),
    user: guard((p) => p.kind === 'user', 'This route needs a user token from POST /auth/login.'),
    admin: guard(isAdmin, 'This route is for admins only.'),
    nodeOrAdmin: guard((p) => p.kind === 'node' || isAdmin(p), 'This route needs a node token or an admin token.'),
  };
}

export type Guards = ReturnType<typeof createGuards>;
