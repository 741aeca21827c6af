import Database from 'better-sqlite3';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/databases.js';
import { createSafeFetch } from '../agent/safe-fetch.js';
import { expireDueAllocations } from '../allocations/allocations.service.js';
import { completeAllocation } from '../allocations/completion.service.js';
import { failurePolicyFrom } from '../allocations/failure-policy.js';
import { openDatabase, SQLITE_FILE_NAME, type Db } from '../db/database.js';
import { claimDue } from '../db/due-work.js';
import { sqliteDialect } from '../db/dialect.js';
import {
  auditPreparation,
  copiesDueForAudit,
  lapsedAuditIds,
  openAuditsOf,
  overdueCopies,
  recountAuditScore,
  recountStaleScores,
  scheduleUnscheduledCopies,
} from './audits.repository.js';
import { proofDepsFrom } from './proof-deps.js';
import { expireAudits, runProofs } from './proof.service.js';
import { loadConfig } from '../config.js';
import { insertNode } from '../nodes/nodes.repository.js';

const HOUR = 3_600_000;
const NOW = Date.UTC(2026, 0, 1);

/**
 * SQLite plans a statement when it is prepared, without the values bound to it and, on a database
 * the server never ANALYZEd, without statistics: a query of completed copies or unfinished audits
 * meant for a partial index, planned instead over an index led by `state`, scans every row in that
 * state, once per completion or pass. The statements of completions and of the proof passes are
 * caught as they run and their plans read back: none may scan allocations or audits whole (a
 * partial index is read whole only for the rows it holds).
 */
describe('SQLite plans of the completion and proof statements', () => {
  let database: TestDatabase;
  const statements = new Set<string>();
  let db: Db;

  beforeEach(async () => {
    database = await createTestDatabase('sqlite');
    const handle = openDatabase({ ...database.options, onQuery: (text) => statements.add(text) });
    db = handle.db;
    for (const name of ['n1', 'n2']) await insertNode(db, { name, hostname: name, ip: null, sshPort: null, tags: {}, tokenHash: null, now: NOW - 48 * HOUR });
    await db
      .updateTable('nodes')
      .set({ status: 'alive', vetted_at: NOW - 48 * HOUR })
      .execute();
    const nodes = (await db.selectFrom('nodes').select('id').orderBy('id').execute()).map((row) => Number(row.id));
    await db
      .insertInto('assets')
      .values(
        Array.from({ length: 20 }, (_, index) => ({
          id: `a${index}`,
          name: `a${index}`,
          url: `http://127.0.0.1:9/${index}`,
          size_bytes: 1000,
          priority: 5,
          replicas_target: 2,
          state: 'pending' as const,
          copies: 0,
          holders: 2,
          first_seen_at: NOW - 48 * HOUR,
          last_seen_at: NOW - 48 * HOUR,
          priority_changed_at: NOW - 48 * HOUR,
          source_host: '127.0.0.1',
        })),
      )
      .execute();
    await db
      .insertInto('allocations')
      .values(
        Array.from({ length: 40 }, (_, index) => ({
          asset_id: `a${index % 20}`,
          node_id: nodes[Math.floor(index / 20)] as number,
          state: 'active' as const,
          reserved_bytes: 1000,
          created_at: NOW - 2 * HOUR,
          expires_at: index < 4 ? NOW - HOUR : NOW + HOUR,
          verified: 0,
          source_host: '127.0.0.1',
        })),
      )
      .execute();
    statements.clear();
  });

  afterEach(async () => {
    await database.drop();
  });

  it('use an index for every search of allocations and audits', async () => {
    const config = loadConfig({ DATA_DIRECTORY: database.options.dataDirectory });
    const deps = { ...proofDepsFrom(config, createSafeFetch({ allowPrivate: false, userAgent: 'test' })), auditIntervalMs: HOUR };
    const nodes = (await db.selectFrom('nodes').select('id').orderBy('id').execute()).map((row) => Number(row.id));
    for (let index = 4; index < 14; index++) {
      const report = { assetId: `a${index}`, nodeId: nodes[0] as number, sha256: 'a'.repeat(64), bytes: 1000, uri: null, merkleRoot: null, actor: 'node' };
      await completeAllocation(db, report, { ...failurePolicyFrom(config), spotChecks: index < 9 ? 3 : 0 }, NOW);
    }
    await expireDueAllocations(db, failurePolicyFrom(config), NOW);
    await runProofs(db, sqliteDialect, deps, 10_000, NOW);
    await runProofs(db, sqliteDialect, deps, 10_000, NOW + 2 * HOUR);
    await claimDue(db, sqliteDialect, auditPreparation, { now: NOW, leaseMs: HOUR, limit: 10 });
    await scheduleUnscheduledCopies(db, NOW, HOUR, 10, Math.random);
    await copiesDueForAudit(db, NOW + 2 * HOUR, 10);
    await overdueCopies(db, NOW + 3 * HOUR, HOUR, 10);
    await lapsedAuditIds(db, NOW, 10);
    await openAuditsOf(db, nodes[0] as number, NOW);
    await recountAuditScore(db, nodes[0] as number, NOW - HOUR, NOW);
    await recountStaleScores(db, NOW, HOUR, 10);
    await expireAudits(db, deps, NOW + 3 * HOUR);

    const reader = new Database(path.join(database.options.dataDirectory, SQLITE_FILE_NAME), { readonly: true });
    try {
      // Scanning a partial index reads only the rows it holds (the copies not yet scheduled, say).
      const partial = new Set(
        reader
          .prepare(`select name from sqlite_master where type = 'index' and sql like '% where %'`)
          .all()
          .map((row) => (row as { name: string }).name),
      );
      const whole = (step: string) => {
        const scan = /^SCAN "?(allocations|audits)"?(?: USING (?:COVERING )?INDEX (\S+))?/.exec(step);
        // A search by state alone reads every row in that state (every completed copy, say),
        // unless the index is partial.
        const byState = /^SEARCH "?(?:allocations|audits)"? USING (?:COVERING )?INDEX (\S+) \(state=\?\)$/.exec(step);
        const index = scan?.[2] ?? byState?.[1];
        return (scan !== null || byState !== null) && (index === undefined || !partial.has(index));
      };
      const scans: string[] = [];
      const searches = [...statements].filter((text) => /^\s*(select|update|delete|with)\b/i.test(text) && /\b(allocations|audits)\b/.test(text));
      for (const text of searches) {
        const parameters = new Array((text.match(/\?/g) ?? []).length).fill(null);
        const plan = reader
          .prepare(`explain query plan ${text}`)
          .all(...parameters)
          .map((row) => (row as { detail: string }).detail);
        for (const step of plan) if (whole(step)) scans.push(`${step}\n    in: ${text}`);
      }
      expect(searches.length).toBeGreaterThan(15);
      expect(scans).toEqual([]);
    } finally {
      reader.close();
    }
  });
});
