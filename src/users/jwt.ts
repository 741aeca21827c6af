import crypto from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { readOrCreateSetting } from './users.repository.js';
import type { Role } from './users.table.js';

export interface UserClaims {
  userId: number;
  username: string;
  role: Role;
}

export interface JwtIssuer {
  issue(claims: UserClaims, now: number): Promise<string>;
  verify(token: string, now: number): Promise<UserClaims>;
}

const ISSUER = 'dispatcher';

/**
 * HS256 tokens. The key is JWT_SECRET when set; otherwise one generated on first start and kept in
 * the database, so restarts and other instances accept the same tokens.
 */
export async function createJwtIssuer(db: Db, options: { secret: string | undefined; ttlMs: number }): Promise<JwtIssuer> {
  const secret = options.secret ?? (await readOrCreateSetting(db, 'jwt_secret', () => crypto.randomBytes(32).toString('base64url')));
  const key = new TextEncoder().encode(secret);
  return {
    async issue(claims, now) {
      const issuedAt = Math.floor(now / 1000);
      return new SignJWT({ username: claims.username, role: claims.role })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(String(claims.userId))
        .setIssuer(ISSUER)
        .setIssuedAt(issuedAt)
        .setExpirationTime(issuedAt + Math.floor(options.ttlMs / 1000))
        .sign(key);
    },
    async verify(token, now) {
      try {
        const { payload } = await jwtVerify(token, key, {
          algorithms: ['HS256'],
          issuer: ISSUER,
          currentDate: new Date(now),
        });
        const role = payload.role;
        if ((role !== 'admin' && role !== 'user') || typeof payload.username !== 'string' || !payload.sub) {
          throw new AppError('UNAUTHENTICATED', 'The token does not carry a user.');
        }
        return { userId: Number(payload.sub), username: payload.username, role };
      } catch (error) {
        if (error instanceof AppError) throw error;
        if (error instanceof joseErrors.JWTExpired) throw new AppError('TOKEN_EXPIRED', 'The token has expired; log in again.');
        throw new AppError('UNAUTHENTICATED', 'The token is not valid.');
      }
    },
  };
}
