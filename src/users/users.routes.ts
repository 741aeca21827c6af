import { Type } from '@sinclair/typebox';
import { AppError } from '../errors.js';
import { authFailureBudgetOf, underFailureBudget } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { errorResponses, perAddressRateLimit } from '../http/schemas.js';
import { logIn, signUp } from './users.service.js';

export const Username = Type.String({ pattern: '^[a-z0-9_.-]{3,32}$', description: '3–32 characters of a-z, 0-9, _ . -' });
const Credentials = Type.Object(
  {
    username: Username,
    password: Type.String({ minLength: 8, maxLength: 1024, description: 'At least 8 characters.' }),
  },
  { additionalProperties: false },
);
const LoginBody = Type.Object({ username: Type.String({ maxLength: 64 }), password: Type.String({ maxLength: 1024 }) }, { additionalProperties: false });

export function registerUserRoutes(app: App, ctx: AppContext): void {
  // The original Orion code served these under /api as well: its clients keep working.
  for (const [signupUrl, loginUrl] of [
    ['/auth/signup', '/auth/login'],
    ['/api/signup', '/api/login'],
  ] as const)
    registerAccountRoutes(app, ctx, signupUrl, loginUrl);
}

function registerAccountRoutes(app: App, ctx: AppContext, signupUrl: string, loginUrl: string): void {
  const alias = signupUrl.startsWith('/api') ? ' (the same as /auth/…, as the original Orion code served it)' : '';
  app.post(
    signupUrl,
    {
      schema: {
        tags: ['accounts'],
        summary: `Create a user account (when SIGNUP=open)${alias}`,
        body: Credentials,
        response: { 200: Type.Object({ message: Type.String() }), ...errorResponses },
      },
      config: perAddressRateLimit(ctx.config.loginRateLimitPerMinute),
    },
    async (request) => {
      if (ctx.config.signup === 'closed') throw new AppError('SIGNUP_CLOSED', 'Sign-up is closed on this server; ask an admin for an account.');
      const { username, password } = request.body;
      await signUp(ctx.db, { username, password, actor: `user:${username}`, now: ctx.clock.now() }, ctx.passwordCost);
      return { message: 'Compte créé' };
    },
  );

  app.post(
    loginUrl,
    {
      schema: {
        tags: ['accounts'],
        summary: `Log in and receive a JWT${alias}`,
        body: LoginBody,
        response: { 200: Type.Object({ token: Type.String() }), ...errorResponses },
      },
      config: perAddressRateLimit(ctx.config.loginRateLimitPerMinute),
    },
    // A wrong password counts against the address's failed-authentication budget, as a bad token does.
    async (request) => {
      const now = ctx.clock.now();
      return { token: await underFailureBudget(authFailureBudgetOf(ctx), request.ip, now, () => logIn(ctx.db, ctx.jwt, { ...request.body, now })) };
    },
  );
}
