import crypto from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { readOrCreateSetting } from '../db/settings.js';
import type { Role } from './users.table.js';

export interface UserClaims {
  userId: number;
  /** Username and role are for display (the dashboard reads them); the database decides the role. */
  username: string;
  role: Role;
  tokenVersion: number;
}

/** What a verified token says: whose it is and which of their token versions it was issued under. */
export interface VerifiedToken {
  userId: number;
  tokenVersion: number;
}

export interface JwtIssuer {
  issue(claims: UserClaims, now: number): Promise<string>;
  verify(token: string, now: number): Promise<VerifiedToken>;
}

const ISSUER = 'dispatcher';
// A token without an expiry would never die, and one without its version could not be revoked.
const REQUIRED_CLAIMS = ['sub', 'iat', 'exp', 'ver'];

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
      return new SignJWT({ username: claims.username, role: claims.role, ver: claims.tokenVersion })
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
          requiredClaims: REQUIRED_CLAIMS,
          currentDate: new Date(now),
        });
        if (!/^[1-9][0-9]{0,15}$/.test(payload.sub ?? '') || !Number.isSafeInteger(payload.ver)) {
          throw new AppError('UNAUTHENTICATED', 'The token does not carry a user.');
        }
        return { userId: Number(payload.sub), tokenVersion: payload.ver as number };
      } catch (error) {
        if (error instanceof AppError) throw error;
        if (error instanceof joseErrors.JWTExpired) throw new AppError('TOKEN_EXPIRED', 'The token has expired; log in again.');
        if (error instanceof joseErrors.JWTClaimValidationFailed)
          throw new AppError('UNAUTHENTICATED', `The token is not valid: ${error.message}; log in again.`);
        throw new AppError('UNAUTHENTICATED', 'The token is not valid.');
      }
    },
  };
}
