import { sql } from 'kysely';
import type { Db } from '../db/database.js';

/** Pauses a host fleet-wide until `until` (a later pause already recorded wins). */
export async function pauseSourceHost(db: Db, host: string, until: number, reason: string, now: number): Promise<void> {
  await db
    .insertInto('source_hosts')
    .values({ host, paused_until: until, pause_reason: reason, updated_at: now })
    .onConflict((conflict) =>
      conflict.column('host').doUpdateSet({
        paused_until: sql`case when source_hosts.paused_until > excluded.paused_until then source_hosts.paused_until else excluded.paused_until end`,
        pause_reason: sql`case when source_hosts.paused_until > excluded.paused_until then source_hosts.pause_reason else excluded.pause_reason end`,
        updated_at: sql`excluded.updated_at`,
      }),
    )
    .execute();
}

/** Hosts paused now, with when each pause ends. */
export async function pausedSourceHosts(db: Db, now: number): Promise<{ host: string; pausedUntil: number; reason: string | null }[]> {
  const rows = await db
    .selectFrom('source_hosts')
    .select(['host', 'paused_until', 'pause_reason'])
    .where('paused_until', '>', now)
    .orderBy('host')
    .limit(1000)
    .execute();
  return rows.map((row) => ({ host: row.host, pausedUntil: Number(row.paused_until), reason: row.pause_reason }));
}

/**
 * Takes the row locks of these hosts, in host order (PostgreSQL), so two transactions granting
 * work on one host count its active allocations one after the other; a host seen for the first
 * time gets its row here.
 */
export async function lockSourceHosts(trx: Db, hosts: string[]): Promise<void> {
  if (hosts.length === 0) return;
  const sorted = [...new Set(hosts)].sort();
  await trx
    .insertInto('source_hosts')
    .values(sorted.map((host) => ({ host, paused_until: 0, pause_reason: null, updated_at: 0 })))
    .onConflict((conflict) => conflict.column('host').doNothing())
    .execute();
  await trx.selectFrom('source_hosts').select('host').where('host', 'in', sorted).orderBy('host').forUpdate().execute();
}

/** Active allocations per host, for these hosts (each count is bounded by the cap). */
export async function activeByHost(db: Db, hosts: string[]): Promise<Map<string, number>> {
  if (hosts.length === 0) return new Map();
  const rows = await db
    .selectFrom('allocations')
    .select(['source_host', sql<number>`count(*)`.as('active')])
    .where(sql<boolean>`state = 'active'`)
    .where('source_host', 'in', [...new Set(hosts)])
    .groupBy('source_host')
    .execute();
  return new Map(rows.map((row) => [row.source_host as string, Number(row.active)]));
}
