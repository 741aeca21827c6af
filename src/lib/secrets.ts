import crypto from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt) as (password: string, salt: Buffer, keylen: number, options: crypto.ScryptOptions) => Promise<Buffer>;

/** scrypt's cost parameters. Every stored hash names the ones it was made with, and is checked with those. */
export interface PasswordCost {
  N: number;
  r: number;
  p: number;
}

/**
 * The cost of every password hash the server and the CLI make; no variable or flag lowers it (only
 * the test harness passes another, through `startServer`'s options). OWASP's scrypt minimum
 * (N=2^17, r=8, p=1) costs ~128 MiB and ~150 ms per hash here; 2^15 with r=8 keeps ~30 ms and
 * 32 MiB per login on a 2-core control plane while staying far above bcrypt-10.
 */
export const PASSWORD_COST: PasswordCost = Object.freeze({ N: 2 ** 15, r: 8, p: 1 });
const SCRYPT_MAXMEM = 64 * 1024 * 1024;
const KEY_LENGTH = 32;

/** Hashes a password as `scrypt$N$r$p$salt$hash` (base64url), computed off the event loop. */
export async function hashPassword(password: string, cost: PasswordCost = PASSWORD_COST): Promise<string> {
  const salt = crypto.randomBytes(16);
  const hash = await scrypt(password, salt, KEY_LENGTH, { ...cost, maxmem: SCRYPT_MAXMEM });
  return ['scrypt', cost.N, cost.r, cost.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

/** Checks a password with the cost its stored hash names, so hashes made at any cost keep verifying. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await scrypt(password, Buffer.from(salt, 'base64url'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: SCRYPT_MAXMEM,
  });
  return crypto.timingSafeEqual(actual, expected);
}

/** A hash computed for unknown usernames, so a login takes as long whether the user exists or not. */
export const DUMMY_PASSWORD_HASH = ['scrypt', PASSWORD_COST.N, PASSWORD_COST.r, PASSWORD_COST.p, 'A'.repeat(22), 'A'.repeat(43)].join('$');

export type TokenKind = 'node' | 'enrollment';
const prefixes: Record<TokenKind, string> = { node: 'dn_', enrollment: 'de_' };

/** A random bearer token whose prefix tells what it is; only its hash is ever stored. */
export function generateToken(kind: TokenKind): string {
  return prefixes[kind] + crypto.randomBytes(24).toString('base64url');
}

export function tokenKind(token: string): TokenKind | 'jwt' {
  if (token.startsWith(prefixes.node)) return 'node';
  if (token.startsWith(prefixes.enrollment)) return 'enrollment';
  return 'jwt';
}

/** Tokens are 192 random bits, so a plain SHA-256 is enough: there is nothing to brute-force. */
export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('base64url');
}

/** Compares secrets without leaking, through timing, how much of them matched. */
export function constantTimeEqual(a: string, b: string): boolean {
  const digest = (value: string) => crypto.createHash('sha256').update(value).digest();
  return crypto.timingSafeEqual(digest(a), digest(b));
}
