import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openDatabase, type DatabaseHandle } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';

export interface CampaignDatabase {
  handle: DatabaseHandle;
  location: string;
  destroy(): Promise<void>;
}

/** A fresh, migrated database for one campaign: a SQLite file in a temporary folder, or a PostgreSQL schema of its own. */
export async function openCampaignDatabase(postgresUrl: string | undefined): Promise<CampaignDatabase> {
  if (postgresUrl === undefined) {
    // In memory when the machine has /dev/shm: a campaign measures the control plane's rules, not the disk.
    const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
    const directory = fs.mkdtempSync(path.join(base, 'dispatcher-sim-'));
    const handle = openDatabase({ databaseUrl: undefined, dataDirectory: directory });
    await migrateToLatest(handle);
    return {
      handle,
      location: handle.location,
      destroy: async () => {
        await handle.close();
        fs.rmSync(directory, { recursive: true, force: true });
      },
    };
  }
  const schema = `sim_${crypto.randomBytes(6).toString('hex')}`;
  await adminQuery(postgresUrl, `create schema ${schema}`);
  const handle = openDatabase({ databaseUrl: postgresUrl, dataDirectory: os.tmpdir(), databaseSchema: schema });
  await migrateToLatest(handle);
  return {
    handle,
    location: `${handle.location} (schema ${schema})`,
    destroy: async () => {
      await handle.close();
      await adminQuery(postgresUrl, `drop schema ${schema} cascade`);
    },
  };
}

async function adminQuery(url: string, statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}
