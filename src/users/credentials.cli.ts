import { systemClock, toIso } from '../clock.js';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import { withDatabase } from '../main.js';
import { createEnrollmentToken, enrollmentTokenExpiry, listEnrollmentTokens, revokeEnrollmentToken, type EnrollmentToken } from '../nodes/nodes.service.js';
import { findUserByUsername } from './users.repository.js';
import { revokeUserTokens } from './users.service.js';

// The `dispatcher user revoke-tokens` and `dispatcher token …` commands: each opens the database
// the configuration names, acts as `cli`, and returns what to print.

/** `dispatcher user revoke-tokens NAME`. */
export async function runUserRevokeTokens(config: Config, username: string): Promise<string> {
  await withDatabase(config, ({ db }) => revokeUserTokens(db, { username, actor: 'cli', now: systemClock.now() }));
  return `Tokens of ${username} revoked: they are refused within seconds; ${username} logs in again.`;
}

/** `dispatcher token create`: expires after ENROLLMENT_TOKEN_TTL_HOURS unless told otherwise. */
export async function runTokenCreate(
  config: Config,
  input: { expiresInHours?: number; maxUses?: number; note?: string; operator?: string },
): Promise<{ token: string; expiresAt: number | null; maxUses: number | null }> {
  return withDatabase(config, async ({ db }) => {
    const now = systemClock.now();
    const expiresAt = enrollmentTokenExpiry(now, input.expiresInHours, config.enrollmentTokenTtlMs);
    const operator = input.operator === undefined ? undefined : await findUserByUsername(db, input.operator);
    if (input.operator !== undefined && !operator)
      throw new AppError('USER_NOT_FOUND', `No user is named "${input.operator}": add it first (dispatcher user add).`);
    return createEnrollmentToken(db, {
      createdBy: null,
      operatorId: operator?.id ?? null,
      actor: 'cli',
      note: input.note ?? null,
      expiresAt,
      maxUses: input.maxUses ?? null,
      now,
    });
  });
}

/** `dispatcher token list`: every enrollment token, newest first, as a table. */
export async function runTokenList(config: Config): Promise<string> {
  const tokens = await withDatabase(config, async ({ db }) => {
    const now = systemClock.now();
    const all: EnrollmentToken[] = [];
    for (let before: number | undefined; ;) {
      const page = await listEnrollmentTokens(db, { before, limit: 1000 }, now);
      all.push(...page);
      if (page.length < 1000) return all;
      before = page[page.length - 1]?.id;
    }
  });
  return describeEnrollmentTokens(tokens);
}

/** `dispatcher token revoke ID`. */
export async function runTokenRevoke(config: Config, id: number): Promise<string> {
  const token = await withDatabase(config, ({ db }) => revokeEnrollmentToken(db, { id, actor: 'cli', now: systemClock.now() }));
  return `Enrollment token ${token.id} revoked at ${toIso(token.revokedAt)}; the nodes it registered keep their own tokens.`;
}

export function describeEnrollmentTokens(tokens: EnrollmentToken[]): string {
  if (tokens.length === 0) return 'No enrollment tokens.';
  const rows = tokens.map((token) => [
    String(token.id),
    token.state,
    token.maxUses === null ? String(token.uses) : `${token.uses}/${token.maxUses}`,
    toIso(token.createdAt),
    toIso(token.expiresAt) ?? 'never',
    token.note ?? '',
  ]);
  const table = [['id', 'state', 'uses', 'created', 'expires', 'note'], ...rows];
  const widths = table[0]!.map((_, column) => Math.max(...table.map((row) => row[column]!.length)));
  return table
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
