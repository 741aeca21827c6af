import { Type } from '@sinclair/typebox';
import { toIso } from '../clock.js';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { actorOf, authenticate, bearerToken, principalOf, underFailureBudget, type CredentialCaches, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses, Hours, Limit, Nullable, perAddressRateLimit } from '../http/schemas.js';
import { tokenKind } from '../lib/secrets.js';
import { quarantineForHostKey } from '../rentals/rentals.service.js';
import { findUserByUsername } from '../users/users.repository.js';
import { canonicalHostKey, HostKeyMismatchError } from '../workers/ssh.js';
import type { WorkerIdentity } from './nodes.repository.js';
import {
  ALREADY_REGISTERED_MESSAGE,
  checkEnrollmentToken,
  createEnrollmentToken,
  ENROLLMENT_TOKEN_STATES,
  enrollmentTokenExpiry,
  listEnrollmentTokens,
  REGISTERED_MESSAGE,
  registerNode,
  revokeEnrollmentToken,
  type EnrollmentToken,
  type RegistrationCredential,
} from './nodes.service.js';

export const NodeName = Type.String({
  pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$',
  description: '1–64 characters of letters, digits, _ . : - (starting with a letter or digit).',
});

const RegisterBody = Type.Object(
  {
    hostname: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$', description: "The node's host name." }),
    ip: Type.Optional(Type.String({ anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }], description: 'Defaults to the address the request came from.' })),
    ssh_port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    node_id: Type.Optional(
      Type.Union([NodeName, Type.Integer({ minimum: 1 })], { description: "Name to register under (default: hostname), or an existing node's integer id." }),
    ),
    tags: Type.Optional(Type.Record(Type.String({ pattern: '^[a-z][a-z0-9_-]{0,31}$' }), Type.String({ maxLength: 128 }), { maxProperties: 16 })),
    ssh_host_key: Type.Optional(
      Type.String({ minLength: 16, maxLength: 8192, description: 'Workers: the SSH host public key ("ssh-ed25519 AAAA…"), pinned on first registration.' }),
    ),
    ssh_user: Type.Optional(
      Type.String({ pattern: '^[a-z_][a-z0-9_-]{0,31}$', description: 'Workers: the account that authorized the provisioning key (default "dispatcher").' }),
    ),
  },
  { additionalProperties: false },
);

const RegisterResponse = Type.Object({
  message: Type.String(),
  node_id: Type.Integer(),
  name: Type.String(),
  node_token: Type.Optional(
    Type.String({
      description:
        'Keep it: it is shown here only. Send it as "Authorization: Bearer <node_token>". Absent when an enrollment token registers the same machine (hostname, ip, ssh_port) again: nothing is issued then.',
    }),
  ),
});

const EnrollmentBody = Type.Object(
  {
    expires_in_hours: Type.Optional(Hours(87_600, 'Default: ENROLLMENT_TOKEN_TTL_HOURS (168 unless configured).')),
    max_uses: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'How many nodes it may register. Default: unlimited.' })),
    note: Type.Optional(Type.String({ maxLength: 200 })),
    operator: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description:
          'A personal token: the user (username) the nodes it registers belong to. Default: the admin who creates it. Copies on nodes of one operator count once (DISTINCT_OPERATORS).',
      }),
    ),
  },
  { additionalProperties: false },
);

const EnrollmentTokenView = Type.Object({
  id: Type.Integer(),
  note: Nullable(Type.String()),
  created_at: Type.String(),
  expires_at: Nullable(Type.String()),
  uses: Type.Integer({ description: 'Nodes registered with it.' }),
  max_uses: Nullable(Type.Integer()),
  revoked_at: Nullable(Type.String()),
  state: Type.Union(ENROLLMENT_TOKEN_STATES.map((state) => Type.Literal(state))),
  operator_id: Nullable(Type.Integer({ description: 'The user the nodes it registers belong to.' })),
});

const EnrollmentTokenQuery = Type.Object(
  { cursor: Type.Optional(Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1, description: 'next_cursor of the previous page.' })), limit: Limit(100, 1000) },
  { additionalProperties: false },
);

const EnrollmentTokenIdParam = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) });

function enrollmentTokenView(token: EnrollmentToken) {
  return {
    id: token.id,
    note: token.note,
    created_at: toIso(token.createdAt),
    expires_at: toIso(token.expiresAt),
    uses: token.uses,
    max_uses: token.maxUses,
    revoked_at: toIso(token.revokedAt),
    state: token.state,
    operator_id: token.operatorId,
  };
}

async function operatorIdOf(db: Db, username: string): Promise<number> {
  const user = await findUserByUsername(db, username);
  if (!user) throw new AppError('USER_NOT_FOUND', `No user is named "${username.slice(0, 64)}": create the account first (dispatcher user add, or sign-up).`);
  return user.id;
}

export function registerNodeRoutes(app: App, ctx: AppContext, guards: Guards): void {
  app.post(
    '/api/enrollment-tokens',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['nodes'],
        summary: 'Create an enrollment token that lets new nodes register (admin)',
        security: bearerSecurity,
        body: EnrollmentBody,
        response: {
          200: Type.Object({ token: Type.String(), id: Type.Integer(), expires_at: Nullable(Type.String()), max_uses: Nullable(Type.Integer()) }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const now = ctx.clock.now();
      const body = request.body;
      const created = await createEnrollmentToken(ctx.db, {
        createdBy: principal.kind === 'user' ? principal.userId : null,
        operatorId: body.operator === undefined ? null : await operatorIdOf(ctx.db, body.operator),
        actor: actorOf(principal),
        note: body.note ?? null,
        expiresAt: enrollmentTokenExpiry(now, body.expires_in_hours, ctx.config.enrollmentTokenTtlMs),
        maxUses: body.max_uses ?? null,
        now,
      });
      return { token: created.token, id: created.id, expires_at: toIso(created.expiresAt), max_uses: created.maxUses };
    },
  );

  app.get(
    '/api/enrollment-tokens',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['nodes'],
        summary: 'Enrollment tokens, newest first, with their uses and state; never the tokens themselves (admin)',
        security: bearerSecurity,
        querystring: EnrollmentTokenQuery,
        response: { 200: Type.Object({ items: Type.Array(EnrollmentTokenView), next_cursor: Nullable(Type.Integer()) }), ...errorResponses },
      },
    },
    async (request) => {
      const { cursor, limit } = request.query;
      const tokens = await listEnrollmentTokens(ctx.db, { before: cursor, limit }, ctx.clock.now());
      return { items: tokens.map(enrollmentTokenView), next_cursor: tokens.length === limit ? (tokens[tokens.length - 1]?.id ?? null) : null };
    },
  );

  app.delete(
    '/api/enrollment-tokens/:id',
    {
      onRequest: guards.admin,
      schema: {
        tags: ['nodes'],
        summary: 'Revoke an enrollment token: it registers no node any more; the nodes it registered keep their own tokens (admin)',
        security: bearerSecurity,
        params: EnrollmentTokenIdParam,
        response: { 200: EnrollmentTokenView, ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      return enrollmentTokenView(await revokeEnrollmentToken(ctx.db, { id: request.params.id, actor: actorOf(principal), now: ctx.clock.now() }));
    },
  );

  app.post(
    '/api/workers/register',
    {
      onRequest: async (request) => {
        request.credential = await underFailureBudget(guards.failures, request.ip, ctx.clock.now(), () =>
          resolveRegistrationCredential(ctx, bearerToken(request), guards),
        );
      },
      config: perAddressRateLimit(ctx.config.loginRateLimitPerMinute),
      schema: {
        tags: ['nodes'],
        summary: 'Register a node (enrollment token), or refresh it (its node token or an admin token)',
        security: bearerSecurity,
        body: RegisterBody,
        response: { 200: RegisterResponse, ...errorResponses },
      },
    },
    async (request) => {
      const body = request.body;
      const worker = workerIdentity(body);
      const credential = request.credential as RegistrationCredential;
      const connectionIp = plainAddress(request.ip);
      const ip = body.ip === undefined ? connectionIp : plainAddress(body.ip);
      const trusted = credential.kind === 'admin';
      const registration = {
        hostname: body.hostname,
        ip,
        sshPort: body.ssh_port ?? null,
        nodeId: body.node_id,
        tags: body.tags,
        worker,
        awaitsApproval: ctx.config.workerApproval === 'admin' && !trusted,
        ownAddressOnly: ctx.config.workerAddress === 'connection' && !trusted ? { connectionIp } : undefined,
      };
      const now = ctx.clock.now();
      const result = await registerNode(ctx.db, registration, credential, now).catch(async (error: unknown) => {
        if (error instanceof AppError && error.code === 'HOST_KEY_CHANGED') {
          await quarantineForHostKey(ctx.db, error.extra.node_id as number, new HostKeyMismatchError(error.extra.presented as string), now);
        }
        throw error;
      });
      // An admin's re-registration rotated the token: the old one must stop working here at once.
      if (!result.created) guards.nodeTokens.forgetWhere((node) => node.id === result.node.id);
      return {
        message: result.created ? REGISTERED_MESSAGE : ALREADY_REGISTERED_MESSAGE,
        node_id: result.node.id,
        name: result.node.name,
        ...(result.nodeToken === null ? {} : { node_token: result.nodeToken }),
      };
    },
  );
}

/** `::ffff:192.0.2.1`, as a dual-stack socket reports an IPv4 client, is 192.0.2.1. */
function plainAddress(ip: string): string {
  return ip.toLowerCase().startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

function workerIdentity(body: { ssh_host_key?: string; ssh_user?: string; ssh_port?: number }): WorkerIdentity | undefined {
  if (body.ssh_host_key === undefined) {
    if (body.ssh_user !== undefined) throw new AppError('VALIDATION_ERROR', 'body/ssh_user needs ssh_host_key: only workers have a provisioning account.');
    return undefined;
  }
  const hostKey = canonicalHostKey(body.ssh_host_key);
  if (!hostKey)
    throw new AppError('VALIDATION_ERROR', 'body/ssh_host_key is not an OpenSSH public key (expected e.g. the contents of /etc/ssh/ssh_host_ed25519_key.pub).');
  if (body.ssh_port === undefined) throw new AppError('VALIDATION_ERROR', 'body/ssh_port is required with ssh_host_key: workers are reached over SSH.');
  return { hostKey, user: body.ssh_user ?? 'dispatcher' };
}

declare module 'fastify' {
  interface FastifyRequest {
    credential?: RegistrationCredential;
  }
}

async function resolveRegistrationCredential(ctx: AppContext, token: string, caches: CredentialCaches): Promise<RegistrationCredential> {
  const kind = tokenKind(token);
  const looksLikeJwt = kind === 'jwt' && token.split('.').length === 3;
  if (kind !== 'node' && !looksLikeJwt) {
    const { tokenId } = await checkEnrollmentToken(ctx.db, token, ctx.config.nodeEnrollmentToken, ctx.clock.now());
    return { kind: 'enrollment', tokenId, actor: 'enrollment' };
  }
  const principal = await authenticate(ctx, token, caches);
  if (principal.kind === 'node') return { kind: 'node', nodeId: principal.nodeId, token, actor: actorOf(principal) };
  if (principal.role !== 'admin') throw new AppError('FORBIDDEN', "Registering a node needs an enrollment token, the node's own token, or an admin token.");
  return { kind: 'admin', actor: actorOf(principal) };
}
