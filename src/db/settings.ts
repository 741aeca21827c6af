import type { Db } from './database.js';

/** Values the control plane creates once and every instance shares (the JWT secret, the provisioning key when no file is given). */
export interface SettingsTable {
  key: string;
  value: string;
}

/** Reads a setting, creating it from `create()` if absent; concurrent starters all get the first value stored. */
export async function readOrCreateSetting(db: Db, key: string, create: () => string): Promise<string> {
  await db
    .insertInto('settings')
    .values({ key, value: create() })
    .onConflict((conflict) => conflict.column('key').doNothing())
    .execute();
  const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirstOrThrow();
  return row.value;
}
