import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { openDatabase, SQLITE_FILE_NAME, type Db } from '../src/db/database.js';
import { sourceHostOf } from '../src/sources/source-host.js';
import { adminQuery, postgresDatabaseNamed, type BenchDatabase } from './databases.js';
import type { Shape } from './proofs-content.js';

/**
 * Bulk seeding for the proofs suite: one INSERT … SELECT over a recursive counter per table, run by
 * the database itself (no rows cross the wire), so a million copies take seconds, not an import.
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** The nodes the copies are spread over (registered through the API), and the operator they share. */
export interface SeedNodes {
  ids: number[];
  operatorId: number | null;
}

/** The registered nodes' ids, which must be consecutive (copy i goes to the (i mod n)-th). */
export async function readSeedNodes(db: Db): Promise<SeedNodes> {
  const rows = await db.selectFrom('nodes').select(['id', 'operator_id']).orderBy('id').execute();
  const ids = rows.map((row) => Number(row.id));
  const operators = new Set(rows.map((row) => row.operator_id));
  if (ids.length === 0 || (ids.at(-1) as number) - (ids[0] as number) + 1 !== ids.length) throw new Error(`node ids are not consecutive: ${ids.join(',')}`);
  if (operators.size !== 1) throw new Error('the seeded nodes do not share one operator');
  // They are established holders: vetting (VETTING_AUDITS) is behind them.
  await db
    .updateTable('nodes')
    .set({ vetted_at: sql`created_at` })
    .execute();
  return { ids, operatorId: rows[0]?.operator_id === null || rows[0] === undefined ? null : Number(rows[0].operator_id) };
}

const counter = (count: number) => `with recursive n(i) as (select 0 union all select i + 1 from n where i < ${count - 1})`;
const literal = (value: string | null) => (value === null ? 'null' : `'${value.replace(/'/g, "''")}'`);
const nodeOf = (nodes: SeedNodes) => `${nodes.ids[0]} + i % ${nodes.ids.length}`;

/**
 * `count` assets `spot-<i>` of `shape` at `url`, each with one active allocation on node (i mod n),
 * granted an hour ago: what nodes that downloaded them are about to complete.
 */
export async function seedActiveAllocations(db: Db, input: { count: number; nodes: SeedNodes; shape: Shape; url: string; now: number }): Promise<void> {
  const { count, nodes, shape, url, now } = input;
  const host = literal(sourceHostOf(url));
  await sql
    .raw(
      `${counter(count)} insert into assets (id, name, url, size_bytes, priority, replicas_target, state, copies, holders, first_seen_at, last_seen_at, priority_changed_at, source_host)
       select 'spot-' || i, 'spot ' || i, ${literal(url)}, ${shape.size}, 5, 1, 'pending', 0, 1, ${now - DAY}, ${now - DAY}, ${now - DAY}, ${host} from n`,
    )
    .execute(db);
  await sql
    .raw(
      `${counter(count)} insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, verified, source_host, operator_id)
       select 'spot-' || i, ${nodeOf(nodes)}, 'active', ${shape.size}, ${now - HOUR}, ${now + 7 * DAY}, 0, ${host}, ${nodes.operatorId ?? 'null'} from n`,
    )
    .execute(db);
}

/**
 * Completes every allocation still active as `/complete` leaves a copy under VERIFY_SPOT_CHECKS
 * > 0 (completed, proof pending, a spot check queued and due), so that the prepare measure has
 * more queued than it can take whatever rate the rounds reached. Returns the spot checks queued.
 */
export async function queueRemainingSpotChecks(db: Db, shape: Shape, now: number): Promise<number> {
  await sql`update allocations set state = 'completed', ended_at = ${now}, bytes = ${shape.size}, sha256 = ${shape.sha256}, merkle_root = ${shape.merkleRoot}, proof = 'pending'
            where state = 'active'`.execute(db);
  await sql`insert into audits (allocation_id, asset_id, node_id, kind, method, state, created_at, due_at)
            select id, asset_id, node_id, 'spot_check', 'ranges', 'queued', ${now}, ${now} from allocations a
            where state = 'completed' and proof = 'pending' and not exists (select 1 from audits where audits.allocation_id = a.id)`.execute(db);
  const { rows } = await sql<{ count: number }>`select count(*) as count from audits where kind = 'spot_check' and state = 'queued'`.execute(db);
  return Number(rows[0]?.count ?? 0);
}

/** The asset ids of `seedActiveAllocations` held by the k-th node, in order. */
export function activeAssetsOf(nodeIndex: number, nodes: number, count: number): string[] {
  const ids: string[] = [];
  for (let i = nodeIndex; i < count; i += nodes) ids.push(`spot-${i}`);
  return ids;
}

export interface CountedSeed {
  count: number;
  nodes: SeedNodes;
  /** Copy i has content shape i mod shapes.length. */
  shapes: Shape[];
  now: number;
  intervalMs: number;
  /** Passed retention audits per copy already on record, one per interval back from now (the score window's history). */
  historyAudits: number;
}

/**
 * `count` counted copies, as a long-running fleet has them: assets `copy-<i>` rescued with the
 * agreed Merkle root of their shape, one completed allocation each (`proof` proven, `verified` 1,
 * the holder's root), next audit times spread over the last half interval (all due: the pass
 * never runs dry), and `historyAudits` passed audits per copy within the score window.
 */
export async function seedCountedCopies(db: Db, kind: BenchDatabase['kind'], seed: CountedSeed): Promise<void> {
  await withoutSecondaryIndexes(db, kind, ['assets', 'allocations', 'audits'], () =>
    withoutForeignKeyChecks(db, kind, (trx) => insertCountedCopies(trx, seed)),
  );
  await sql`update nodes set audits_passed = (select count(*) from audits where audits.node_id = nodes.id)`.execute(db);
}

/**
 * The rows refer to each other by construction, so the per-row foreign-key checks (most of a
 * bulk insert's time on PostgreSQL) are skipped: `session_replication_role = replica` for the
 * transaction (it also skips row triggers: only active allocations have any, and none are
 * inserted), `foreign_keys = off` on SQLite's one connection.
 */
async function withoutForeignKeyChecks(db: Db, kind: BenchDatabase['kind'], work: (db: Db) => Promise<void>): Promise<void> {
  if (kind === 'postgres') {
    await db.transaction().execute(async (trx) => {
      await sql`set local session_replication_role = replica`.execute(trx);
      await work(trx);
    });
    return;
  }
  await sql`pragma foreign_keys = off`.execute(db);
  try {
    await work(db);
  } finally {
    await sql`pragma foreign_keys = on`.execute(db);
  }
}

async function insertCountedCopies(db: Db, seed: CountedSeed): Promise<void> {
  const { count, nodes, shapes, now, intervalMs } = seed;
  const pick = (field: (shape: Shape) => string | number) =>
    `case i % ${shapes.length} ${shapes.map((shape, index) => `when ${index} then ${typeof field(shape) === 'number' ? field(shape) : literal(field(shape) as string)}`).join(' ')} end`;
  const size = pick((shape) => shape.size);
  const [sha256, root] = [pick((shape) => shape.sha256), pick((shape) => shape.merkleRoot)];
  const url = 'https://data.example.org/proofs/';
  await sql
    .raw(
      `${counter(count)} insert into assets (id, name, url, size_bytes, priority, replicas_target, state, copies, holders, sha256, merkle_root, first_seen_at, last_seen_at, priority_changed_at, source_host)
       select 'copy-' || i, 'copy ' || i, '${url}' || i, ${size}, 5, 1, 'rescued', 1, 1, ${sha256}, ${root}, ${now - 60 * DAY}, ${now - 60 * DAY}, ${now - 60 * DAY}, 'data.example.org' from n`,
    )
    .execute(db);
  const ended = now - 30 * DAY;
  // A spread that looks random (a multiplicative hash of i) but is the same on every run and both databases.
  const spread = (range: number) => `(cast(i as bigint) * 2654435761 % ${Math.max(1, Math.floor(range))})`;
  await sql
    .raw(
      `${counter(count)} insert into allocations (asset_id, node_id, state, reserved_bytes, created_at, expires_at, ended_at, bytes, sha256, merkle_root, verified, proof, proven_at, proved_at, next_audit_at, source_host, operator_id)
       select 'copy-' || i, ${nodeOf(nodes)}, 'completed', ${size}, ${ended - HOUR}, ${ended + DAY}, ${ended}, ${size}, ${sha256}, ${root}, 1, 'proven', ${ended}, ${ended}, ${now - 1} - ${spread(intervalMs / 2)}, 'data.example.org', ${nodes.operatorId ?? 'null'} from n`,
    )
    .execute(db);
  if (seed.historyAudits > 0) await seedAuditHistory(db, seed);
}

/** One passed block audit per copy per interval back from now: what each verdict's score recount reads. */
async function seedAuditHistory(db: Db, seed: CountedSeed): Promise<void> {
  const back = Array.from({ length: seed.historyAudits }, (_, k) => `select ${k} as k`).join(' union all ');
  const at = `${seed.now - seed.intervalMs} - k * ${seed.intervalMs} + (cast(a.id as bigint) * 2654435761 % ${seed.intervalMs})`;
  await sql
    .raw(
      `insert into audits (allocation_id, asset_id, node_id, kind, method, state, block, created_at, due_at, lease_until, ended_at, detail)
       select a.id, a.asset_id, a.node_id, 'retention', 'block', 'passed', 0, ${at}, ${at}, ${at} + 600000, ${at}, 'block 0 is on the agreed Merkle tree'
       from allocations a cross join (${back}) history`,
    )
    .execute(db);
}

/**
 * Runs a bulk insert with the tables' secondary indexes dropped, then creates them again from
 * their own definitions (read from the catalogue, so they are exactly the migrations'): building
 * an index once from sorted rows is many times faster than millions of inserts into it.
 */
async function withoutSecondaryIndexes(db: Db, kind: BenchDatabase['kind'], tables: string[], work: () => Promise<void>): Promise<void> {
  const list = tables.map((table) => `'${table}'`).join(', ');
  const { rows } =
    kind === 'postgres'
      ? await sql<{ name: string; definition: string }>`
          select i.indexname as name, i.indexdef as definition from pg_indexes i
          where i.schemaname = current_schema() and i.tablename in (${sql.raw(list)})
            and not exists (select 1 from pg_constraint c where c.conname = i.indexname)`.execute(db)
      : await sql<{ name: string; definition: string }>`
          select name, sql as definition from sqlite_master where type = 'index' and tbl_name in (${sql.raw(list)}) and sql is not null`.execute(db);
  for (const index of rows) await sql`drop index ${sql.id(index.name)}`.execute(db);
  try {
    await work();
  } finally {
    for (const index of rows) await sql.raw(index.definition).execute(db);
  }
}

/**
 * A copy of a seeded database, so that every round of a comparison starts from the same rows:
 * SQLite copies the file (no connection may be open), PostgreSQL creates a database from it as
 * template (likewise).
 */
export async function cloneDatabase(seed: BenchDatabase, pgUrl: string): Promise<BenchDatabase> {
  if (seed.kind === 'sqlite') {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'dispatcher-bench-proofs-'));
    const file = path.join(directory, SQLITE_FILE_NAME);
    await fs.copyFile(seed.sqliteFile as string, file);
    // Closing the last connection checkpoints the WAL into the file; a WAL left over goes along.
    await fs.copyFile(`${seed.sqliteFile}-wal`, `${file}-wal`).catch(() => undefined);
    return {
      kind: 'sqlite',
      location: file,
      sqliteFile: file,
      serverEnv: { DATA_DIRECTORY: directory },
      open: () => openDatabase({ databaseUrl: undefined, dataDirectory: directory }),
      destroy: () => fs.rm(directory, { recursive: true, force: true }),
    };
  }
  const name = `${seed.postgresDatabase}_c${Date.now() % 1_000_000}`;
  await adminQuery(pgUrl, `create database ${name} template ${seed.postgresDatabase}`);
  return postgresDatabaseNamed(pgUrl, name);
}

/** After a bulk seed: PostgreSQL's autovacuum would soon have vacuumed and analyzed; SQLite's server never runs ANALYZE. */
export async function settleAfterSeed(db: Db, kind: BenchDatabase['kind']): Promise<void> {
  if (kind === 'postgres') await sql`vacuum analyze`.execute(db);
}
