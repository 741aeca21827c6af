import type { FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';
import { hashToken, tokenKind } from '../lib/secrets.js';
import { findNodeByTokenHash } from '../nodes/nodes.repository.js';
import { findTokenHolder } from '../users/users.repository.js';
import type { Role } from '../users/users.table.js';
import type { AppContext } from './context.js';

export type Principal = { kind: 'user'; userId: number; username: string; role: Role } | { kind: 'node'; nodeId: number; nodeName: string };

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

/** How an actor is written in events. */
export function actorOf(principal: Principal): string {
  return principal.kind === 'user' ? `user:${principal.username}` : `node:${principal.nodeName}`;
}

/** A request that presents no credential at all: refused, but it is not a failed authentication. */
class NoCredential extends AppError {
  constructor() {
    super('UNAUTHENTICATED', 'Missing Authorization header; send "Authorization: Bearer <token>".');
  }
}

export function bearerToken(request: FastifyRequest): string {
  const header = request.headers.authorization;
  if (!header) throw new NoCredential();
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) throw new AppError('UNAUTHENTICATED', 'Malformed Authorization header; expected "Bearer <token>".');
  return match[1] as string;
}

/** What spares authentication a database round trip; the guards keep one of each per app. */
export interface CredentialCaches {
  nodeTokens: NodeTokenCache;
  users: UserCache;
}

/**
 * Resolves the bearer token into a user (JWT) or a node (node token). A user token counts only
 * while its user exists and has not revoked it (`token_version`), and the role is the user's
 * current one, not the one written in the token.
 */
export async function authenticate(ctx: AppContext, token: string, caches?: CredentialCaches): Promise<Principal> {
  const now = ctx.clock.now();
  const kind = tokenKind(token);
  if (kind === 'node') {
    const tokenHash = hashToken(token);
    let node = caches?.nodeTokens.get(tokenHash, now);
    if (!node) {
      node = await findNodeByTokenHash(ctx.db, tokenHash);
      if (!node) throw new AppError('UNAUTHENTICATED', 'Unknown node token.');
      caches?.nodeTokens.set(tokenHash, node, now);
    }
    return { kind: 'node', nodeId: node.id, nodeName: node.name };
  }
  if (kind === 'enrollment') {
    throw new AppError('FORBIDDEN', 'An enrollment token can only register a node (POST /api/workers/register).');
  }
  const claims = await ctx.jwt.verify(token, now);
  let user = caches?.users.get(claims.userId, now);
  if (!user) {
    user = await findTokenHolder(ctx.db, claims.userId);
    if (!user) throw new AppError('UNAUTHENTICATED', "The token's user no longer exists.");
    caches?.users.set(claims.userId, user, now);
  }
  if (user.tokenVersion !== claims.tokenVersion)
    throw new AppError('UNAUTHENTICATED', 'The token was revoked (a password change or a revocation); log in again.');
  return { kind: 'user', userId: user.id, username: user.username, role: user.role };
}

interface ExpiringCache<K, V> {
  get(key: K, now: number): V | undefined;
  set(key: K, value: V, now: number): void;
  /** Drops at once the entries whose value matches (changed on this instance). */
  forgetWhere(matches: (value: V) => boolean): void;
}

function createExpiringCache<K, V>(ttlMs: number, maxSize: number): ExpiringCache<K, V> {
  const entries = new Map<K, { value: V; until: number }>();
  return {
    get(key, now) {
      const entry = entries.get(key);
      if (entry && entry.until > now) return entry.value;
      entries.delete(key);
      return undefined;
    },
    set(key, value, now) {
      if (entries.size >= maxSize) entries.clear();
      entries.set(key, { value, until: now + ttlMs });
    },
    forgetWhere(matches) {
      for (const [key, entry] of entries) if (matches(entry.value)) entries.delete(key);
    },
  };
}

// A node authenticates on every /allocate, /release and /complete. Remembering its token for a few
// seconds spares a database round trip that otherwise queues behind running transactions. The
// price: a node token rotated on another instance keeps working there for up to this long.
const NODE_TOKEN_CACHE_MS = 10_000;
// The same for a user token's holder: a revocation, a password change or a new role made on another
// instance (or by the CLI) takes effect here within this long.
const USER_CACHE_MS = 5_000;
const CACHE_SIZE = 100_000;

export type NodeTokenCache = ExpiringCache<string, { id: number; name: string }>;
export type UserCache = ExpiringCache<number, { id: number; username: string; role: Role; tokenVersion: number }>;

/** Refuses an address that failed to authenticate too often, before any lookup. */
export interface AuthFailureBudget {
  /** Throws 429 `RATE_LIMITED` while `address` has spent its budget of the current minute. */
  refuseWhenSpent(address: string, now: number): void;
  record(address: string, now: number): void;
}

const FAILURE_WINDOW_MS = 60_000;
const FAILURE_ADDRESSES = 100_000;

/** A fixed one-minute window per client address, in memory (per instance), at most FAILURE_ADDRESSES of them. */
export function createAuthFailureBudget(perMinute: number): AuthFailureBudget {
  const windows = new Map<string, { start: number; failures: number }>();
  const current = (address: string, now: number) => {
    const window = windows.get(address);
    return window && now >= window.start && now < window.start + FAILURE_WINDOW_MS ? window : undefined;
  };
  return {
    refuseWhenSpent(address, now) {
      const window = current(address, now);
      if (!window || window.failures < perMinute) return;
      const retryAfter = Math.max(1, Math.ceil((window.start + FAILURE_WINDOW_MS - now) / 1000));
      throw new AppError(
        'RATE_LIMITED',
        `Too many failed authentications from this address (${perMinute} a minute); retry in ${retryAfter} s, at ${new Date(window.start + FAILURE_WINDOW_MS).toISOString()}.`,
        { retry_after_seconds: retryAfter },
      );
    },
    record(address, now) {
      const window = current(address, now);
      if (window) {
        window.failures += 1;
        return;
      }
      windows.delete(address);
      // Windows are inserted as they open, so the oldest come first: drop the closed ones, then
      // (under a flood of addresses) the oldest open ones.
      for (const [key, old] of windows) {
        if (windows.size < FAILURE_ADDRESSES && now < old.start + FAILURE_WINDOW_MS) break;
        windows.delete(key);
      }
      windows.set(address, { start: now, failures: 1 });
    },
  };
}

// One budget per application: the guards, node registration and the login route (which is
// registered without the guards) all count against it.
const budgets = new WeakMap<AppContext, AuthFailureBudget>();

export function authFailureBudgetOf(ctx: AppContext): AuthFailureBudget {
  let budget = budgets.get(ctx);
  if (!budget) budgets.set(ctx, (budget = createAuthFailureBudget(ctx.config.authFailuresPerMinute)));
  return budget;
}

/**
 * Runs `attempt` under the address's failure budget: once it is spent, refused with 429 before
 * `attempt` runs (so before any database lookup); each 401 it throws counts, except for a request
 * that presented no credential at all.
 */
export async function underFailureBudget<T>(budget: AuthFailureBudget, address: string, now: number, attempt: () => Promise<T>): Promise<T> {
  budget.refuseWhenSpent(address, now);
  try {
    return await attempt();
  } catch (error) {
    if (error instanceof AppError && error.status === 401 && !(error instanceof NoCredential)) budget.record(address, now);
    throw error;
  }
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
  const caches: CredentialCaches = {
    nodeTokens: createExpiringCache(NODE_TOKEN_CACHE_MS, CACHE_SIZE),
    users: createExpiringCache(USER_CACHE_MS, CACHE_SIZE),
  };
  const failures = authFailureBudgetOf(ctx);
  const guard = (allow: (principal: Principal) => boolean, refusal: string) => async (request: FastifyRequest) => {
    const principal = await underFailureBudget(failures, request.ip, ctx.clock.now(), () => authenticate(ctx, bearerToken(request), caches));
    if (!allow(principal)) throw new AppError('FORBIDDEN', refusal);
    request.principal = principal;
  };
  return {
    ...caches,
    failures,
    any: guard(() => true, ''),
    user: guard((p) => p.kind === 'user', 'This route needs a user token from POST /auth/login.'),
    admin: guard(isAdmin, 'This route is for admins only.'),
    node: guard((p) => p.kind === 'node', 'This route needs a node token.'),
    nodeOrAdmin: guard((p) => p.kind === 'node' || isAdmin(p), 'This route needs a node token or an admin token.'),
  };
}

export type Guards = ReturnType<typeof createGuards>;
