import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, dialects, type TestDatabase } from '../../test/databases.js';
import { importAssets } from '../assets/assets.service.js';
import { openDatabase } from '../db/database.js';
import { insertNode } from '../nodes/nodes.repository.js';
import { buildConfig } from '../config.js';
import { allocateAssets, allocationPolicyFrom } from './allocate.service.js';
import { completeAllocation, expireDueAllocations, releaseAllocation } from './allocations.service.js';
import { failurePolicyFrom } from './failure-policy.js';

/**
 * The concurrency-critical statements, compiled for each database and checked in beside this
 * file, so a change to them shows up in review as SQL rather than as query-builder code.
 */
describe.each(dialects)('claim SQL on %s', (dialect) => {
  let database: TestDatabase;
  afterEach(async () => {
    await database.drop();
  });

  it('matches the reviewed snapshot', async () => {
    database = await createTestDatabase(dialect);
    const statements: string[] = [];
    const handle = openDatabase({ ...database.options, onQuery: (text) => statements.push(text) });
    try {
      const now = 1_000;
      await importAssets(database.handle.db, [
        { id: 'a', url: 'http://x/a', name: 'a', priority: 5, size_mb: 1 },
        { id: 'b', url: 'http://x/b', name: 'b', priority: 5, size_mb: null },
      ], { replicasFor: () => 1, actor: 'test', source: 'test' }, now);
      const node = await insertNode(database.handle.db, { name: 'n', hostname: 'n', ip: null, sshPort: null, tags: {}, tokenHash: null, now });
      const section = (title: string) => statements.push(`-- ${title}`);
      section('allocate');
      await allocateAssets(handle.db, handle.dialect, { nodeId: node!.id, freeBytes: 10 * 1024 ** 3, maxAssets: 5, minPriority: 1, actor: 't' }, { ...allocationPolicyFrom(buildConfig()), unknownSizeEstimateBytes: 1024, unknownSizeMaxPerRequest: 1 }, now);
      section('release');
      await releaseAllocation(handle.db, { assetId: 'b', nodeId: node!.id, reason: null, actor: 't' }, { goneConfirmations: 2, ...failurePolicyFrom(buildConfig()) }, now);
      section('complete');
      await completeAllocation(handle.db, { assetId: 'a', nodeId: node!.id, sha256: 'f'.repeat(64), bytes: 1024 * 1024, uri: null, actor: 't' }, failurePolicyFrom(buildConfig()), now);
      section('expire');
      await expireDueAllocations(handle.db, failurePolicyFrom(buildConfig()), now + 2000);
    } finally {
      await handle.close();
    }
    const text = `${statements.join(';\n\n')};\n`.replace(/search_path=t_[0-9a-f_]+/g, 'search_path=<schema>');
    await expect(text).toMatchFileSnapshot(`./__snapshots__/claim.${dialect}.sql`);
  });
});
