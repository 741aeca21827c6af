import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import type { Db } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { createTestDatabase, dialects, type DialectName, type TestDatabase } from './databases.js';

/** Every table's rows, but when each migration ran. */
async function rowsOf(db: Db, tables: string[]): Promise<Record<string, unknown[]>> {
  const rows: Record<string, unknown[]> = {};
  for (const table of tables.sort()) {
    const all = (await sql<Record<string, unknown>>`select * from ${sql.table(table)}`.execute(db)).rows;
    rows[table] = all
      .map((row) => (table === 'kysely_migration' ? { ...row, timestamp: undefined } : row))
      .map((row) => JSON.stringify(row))
      .sort();
  }
  return rows;
}

async function describeSqlite(db: Db): Promise<unknown> {
  const objects = (
    await sql<{ type: string; name: string; sql: string | null }>`select type, name, tbl_name, sql from sqlite_master order by type, name`.execute(db)
  ).rows;
  const pragmas: Record<string, unknown> = {};
  for (const pragma of ['journal_mode', 'user_version', 'auto_vacuum', 'page_size', 'encoding'])
    pragmas[pragma] = (await sql.raw(`pragma ${pragma}`).execute(db)).rows;
  const tables = objects.filter((object) => object.type === 'table').map((object) => object.name);
  return { objects, pragmas, rows: await rowsOf(db, tables) };
}

/** The schema's tables, columns, indexes, constraints, triggers, functions, sequences and rows, its name left out. */
async function describePostgres(db: Db, schema: string): Promise<unknown> {
  const queries: Record<string, string> = {
    relations: `select relname, relkind, relpersistence, reloptions from pg_class where relnamespace = $1::regnamespace order by relname`,
    columns: `select table_name, ordinal_position, column_name, data_type, column_default, is_nullable, is_identity, identity_generation from information_schema.columns where table_schema = $1 order by 1, 2`,
    indexes: `select tablename, indexname, indexdef from pg_indexes where schemaname = $1 order by 2`,
    constraints: `select conrelid::regclass::text as relation, conname, pg_get_constraintdef(oid) as definition from pg_constraint where connamespace = $1::regnamespace order by 1, 2`,
    triggers: `select tgname, pg_get_triggerdef(t.oid) as definition, tgenabled from pg_trigger t join pg_class c on c.oid = t.tgrelid where c.relnamespace = $1::regnamespace and not tgisinternal order by 1`,
    functions: `select proname, pg_get_functiondef(oid) as definition from pg_proc where pronamespace = $1::regnamespace order by 1`,
    sequences: `select sequencename, data_type::text, start_value, min_value, max_value, increment_by, cycle, cache_size, last_value from pg_sequences where schemaname = $1 order by 1`,
    ownedSequences: `select s.relname, d.refobjid::regclass::text as relation, d.refobjsubid from pg_depend d join pg_class s on s.oid = d.objid where s.relkind = 'S' and s.relnamespace = $1::regnamespace and d.deptype in ('a', 'i') order by 1`,
    comments: `select c.relname, a.attnum, col_description(c.oid, a.attnum) as comment from pg_class c join pg_attribute a on a.attrelid = c.oid where c.relnamespace = $1::regnamespace and col_description(c.oid, a.attnum) is not null order by 1, 2`,
    views: `select viewname, definition from pg_views where schemaname = $1 order by 1`,
  };
  const catalog: Record<string, unknown> = {};
  for (const [name, query] of Object.entries(queries)) {
    const { rows } = await sql.raw<Record<string, unknown>>(query.replaceAll('$1', `'${schema}'`)).execute(db);
    catalog[name] = JSON.parse(JSON.stringify(rows).replaceAll(schema, '<schema>'));
  }
  const tables = (catalog.relations as { relname: string; relkind: string }[])
    .filter((relation) => relation.relkind === 'r')
    .map((relation) => relation.relname);
  return { catalog, rows: await rowsOf(db, tables) };
}

const describeDatabase = (database: TestDatabase) =>
  database.name === 'postgres' ? describePostgres(database.handle.db, database.options.databaseSchema as string) : describeSqlite(database.handle.db);

describe.each(dialects)('test databases on %s', (dialect: DialectName) => {
  const databases: TestDatabase[] = [];
  const create = async (setup: { migrate?: boolean } = {}) => {
    const database = await createTestDatabase(dialect, setup);
    databases.push(database);
    return database;
  };
  afterEach(async () => {
    await Promise.all(databases.splice(0).map((database) => database.drop()));
  });

  it("are copies of the run's template, identical to a database migrated anew", async () => {
    const copy = await create();
    const fresh = await create({ migrate: false });
    expect(await migrateToLatest(fresh.handle)).not.toEqual([]);
    const described = await describeDatabase(copy);
    expect(described).toEqual(await describeDatabase(fresh));
    // Not two empty descriptions: the triggers migrations create are in it.
    expect(JSON.stringify(described)).toMatch(/CREATE TRIGGER/);
    expect(await migrateToLatest(copy.handle)).toEqual([]);
  });

  it('are each their own: rows, sequences and objects one test adds are not in the next', async () => {
    const first = await create();
    await sql`insert into users (username, password_hash, role, created_at) values ('alice', 'x', 'user', 1)`.execute(first.handle.db);
    await sql`create table scratch (id int)`.execute(first.handle.db);
    const second = await create();
    expect((await sql`select username from users`.execute(second.handle.db)).rows).toEqual([]);
    const { id } = await second.handle.db
      .insertInto('users')
      .values({ username: 'bob', password_hash: 'x', role: 'user', created_at: 1 })
      .returning('id')
      .executeTakeFirstOrThrow();
    expect(id).toBe(1);
    await expect(sql`select * from scratch`.execute(second.handle.db)).rejects.toThrow(/scratch/);
  });
});
