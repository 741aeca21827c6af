import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { beforeEach, describe, expect, it } from 'vitest';
import { dialects, useTestDatabase, type TestDatabase } from '../../test/databases.js';
import { importAssets } from '../assets/assets.service.js';
import { buildConfig } from '../config.js';
import type { Db } from '../db/database.js';
import { reclaimFromDeadNodes } from '../nodes/liveness.service.js';
import { insertNode } from '../nodes/nodes.repository.js';
import { allocateAssets, allocationPolicyFrom } from './grants.service.js';
import { expireDueAllocations, releaseAllocation } from './allocations.service.js';
import { completeAllocation } from './completion.service.js';
import { failurePolicyFrom } from './failure-policy.js';
import { supersedeStaleCopies } from './source-change.service.js';

const SRC = path.resolve(import.meta.dirname, '..');
const HOME = path.join('allocations', 'end-allocations.ts');

/**
 * Every write of `holders` in a source file, as `file:line text` for those that may lower it.
 * Allowed outside end-allocations.ts: a literal increment (`eb('holders', '+', n)`, SQL
 * `holders = holders + …`), the no-op that locks an asset row (`holders: eb.ref('holders')`), a new
 * row's 0, and changeHolders's own statement, whose callers must then pass the literal 1.
 */
function holdersLowered(file: string, text: string): string[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const found: string[] = [];
  const flag = (node: ts.Node) => found.push(`${file}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1} ${node.getText().slice(0, 100)}`);
  const insideChangeHolders = (node: ts.Node): boolean =>
    ts.isFunctionDeclaration(node) ? node.name?.text === 'changeHolders' : node.parent !== undefined && insideChangeHolders(node.parent);
  const isOperationOnHolders = (node: ts.Node): node is ts.CallExpression =>
    ts.isCallExpression(node) &&
    ts.isIdentifier(node.expression) &&
    node.arguments.length === 3 &&
    ts.isStringLiteral(node.arguments[0] as ts.Expression) &&
    (node.arguments[0] as ts.StringLiteral).text === 'holders';
  const isIncrement = (node: ts.CallExpression): boolean =>
    ts.isStringLiteral(node.arguments[1] as ts.Expression) &&
    (node.arguments[1] as ts.StringLiteral).text === '+' &&
    (ts.isNumericLiteral(node.arguments[2] as ts.Expression) || insideChangeHolders(node));
  const visit = (node: ts.Node) => {
    // A binary operation on holders in the query builder: eb('holders', <op>, <value>).
    if (isOperationOnHolders(node) && !isIncrement(node)) flag(node);
    // holders: <value> in an object literal given to .set(): what an UPDATE assigns.
    if (ts.isPropertyAssignment(node) && node.name.getText() === 'holders' && withinSetCall(node)) {
      if (!isOperationOnHolders(node.initializer) && node.initializer.getText() !== "eb.ref('holders')") flag(node);
    }
    // Raw SQL: holders = <anything but holders + …>.
    if (
      ts.isNoSubstitutionTemplateLiteral(node) ||
      ts.isTemplateHead(node) ||
      ts.isTemplateMiddle(node) ||
      ts.isTemplateTail(node) ||
      ts.isStringLiteral(node)
    ) {
      if (/\bholders\s*=(?!=)/i.test(node.text) && !/\bholders\s*=\s*holders\s*\+/i.test(node.text)) flag(node);
    }
    // changeHolders(db, ids, direction): only the literal 1 here.
    if (ts.isCallExpression(node) && node.expression.getText() === 'changeHolders' && node.arguments[2]?.getText() !== '1') flag(node);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

function withinSetCall(node: ts.Node): boolean {
  for (let at: ts.Node | undefined = node.parent; at; at = at.parent) {
    if (ts.isCallExpression(at)) return ts.isPropertyAccessExpression(at.expression) && at.expression.name.text === 'set';
  }
  return false;
}

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'migrations' ? [] : sourceFiles(full);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [full] : [];
  });
}

describe('holders go down in end-allocations.ts only', () => {
  it('finds no other code that lowers or recounts holders', () => {
    const lowered = sourceFiles(SRC)
      .filter((file) => path.relative(SRC, file) !== HOME)
      .flatMap((file) => holdersLowered(path.relative(SRC, file), fs.readFileSync(file, 'utf8')));
    expect(lowered, 'end allocations with endAllocations (src/allocations/end-allocations.ts) instead').toEqual([]);
  });

  it('sees what it is looking for', () => {
    expect(holdersLowered(HOME, fs.readFileSync(path.join(SRC, HOME), 'utf8')).length).toBeGreaterThanOrEqual(2);
    const lowering = [
      "db.updateTable('assets').set((eb) => ({ holders: eb('holders', '-', 1) }))",
      "db.updateTable('assets').set({ holders: sql`${a} + ${b}` })",
      'sql`update assets set holders = holders - 1`',
      "db.updateTable('assets').set({ holders: 0 })",
      'changeHolders(trx, ids, -1)',
      'changeHolders(trx, ids, direction)',
    ];
    for (const line of lowering) expect(holdersLowered('x.ts', line), line).toHaveLength(1);
    const raising = [
      "set((eb) => ({ holders: eb('holders', '+', 1) }))",
      'sql`update assets set holders = holders + c.grants`',
      "set((eb) => ({ holders: eb.ref('holders') }))",
      'changeHolders(trx, ids, 1)',
      'values({ holders: 0 })',
    ];
    for (const line of raising) expect(holdersLowered('x.ts', line), line).toEqual([]);
  });
});

const MIB = 1024 * 1024;
const HOUR = 3_600_000;
const END_KINDS = ['allocation.released', 'allocation.failed', 'allocation.completed', 'allocation.expired', 'allocation.reclaimed'];

/** Invariant 4 through every exit path: release, fail, complete, expire, reclaim, supersede. */
describe.each(dialects)('every allocation ends once, with its event, on %s', (dialect) => {
  const suite = useTestDatabase(dialect);
  let database: TestDatabase;
  let db: Db;
  beforeEach(() => ({ database, db } = suite));

  const config = buildConfig();
  const failure = failurePolicyFrom(config);
  let now = 1_000_000;
  const nodeIds: Record<string, number> = {};
  const allocate = (name: string) =>
    allocateAssets(
      db,
      database.handle.dialect,
      { nodeId: nodeIds[name] as number, freeBytes: 100 * 1024 * MIB, maxAssets: 20, minPriority: 1, actor: name },
      { ...allocationPolicyFrom(config), sourceHostMaxActive: 0 },
      (now += 1000),
    );
  const release = (asset: string, node: string, extra: { cause?: 'size_mismatch' | 'stopping'; sourceStatus?: number } = {}) =>
    releaseAllocation(
      db,
      { assetId: asset, nodeId: nodeIds[node] as number, reason: null, actor: node, ...extra },
      { goneConfirmations: 2, ...failure },
      (now += 1000),
    );
  const complete = (asset: string, node: string, sha: string) =>
    completeAllocation(
      db,
      { assetId: asset, nodeId: nodeIds[node] as number, sha256: sha.repeat(64), bytes: MIB, uri: null, actor: node },
      failure,
      (now += 1000),
    );

  /** Lease ends recorded per allocation: its own end event, or a line in its asset's source_changed event. */
  const endsRecorded = async () => {
    const ends = new Map<number, number>();
    for (const event of await db.selectFrom('events').select(['kind', 'subject_id', 'data']).execute()) {
      const data = event.data ? (JSON.parse(event.data) as { ended_claims?: { allocation_id: number }[] }) : {};
      const ids = END_KINDS.includes(event.kind)
        ? [Number(event.subject_id)]
        : event.kind === 'asset.source_changed'
          ? (data.ended_claims ?? []).map((claim) => claim.allocation_id)
          : [];
      for (const id of ids) ends.set(id, (ends.get(id) ?? 0) + 1);
    }
    return ends;
  };

  const expectInvariants = async () => {
    const allocations = await db.selectFrom('allocations').select(['id', 'asset_id', 'state', 'verified']).execute();
    const ends = await endsRecorded();
    for (const allocation of allocations)
      expect([allocation.id, allocation.state, ends.get(allocation.id) ?? 0]).toEqual([allocation.id, allocation.state, allocation.state === 'active' ? 0 : 1]);
    for (const asset of await db.selectFrom('assets').select(['id', 'holders', 'copies']).execute()) {
      const mine = allocations.filter((allocation) => allocation.asset_id === asset.id);
      const copies = mine.filter((allocation) => allocation.state === 'completed' && allocation.verified === 1).length;
      const active = mine.filter((allocation) => allocation.state === 'active').length;
      expect({ id: asset.id, holders: asset.holders, copies: asset.copies }).toEqual({ id: asset.id, holders: copies + active, copies });
    }
  };

  it('through release, fail, complete, expire, reclaim and supersede, and never twice', async () => {
    await importAssets(
      db,
      ['a', 'b', 'c', 'd', 'e', 'f'].map((id, index) => ({
        id,
        url: `http://h${index % 2}.example.org/${id}`,
        name: id,
        priority: 9 - index,
        size_mb: 1,
        replicas_target: 4,
      })),
      { replicasFor: () => 4, actor: 'test', source: 'test' },
      now,
    );
    for (const name of ['n1', 'n2', 'n3', 'n4'])
      nodeIds[name] = (await insertNode(db, { name, hostname: name, ip: null, sshPort: null, tags: {}, tokenHash: null, now }))!.id;
    for (const name of ['n1', 'n2', 'n3', 'n4']) expect((await allocate(name)).granted).toHaveLength(6);
    await expectInvariants();

    await release('a', 'n1');
    await release('a', 'n2', { cause: 'size_mismatch' });
    await release('b', 'n1', { sourceStatus: 404 });
    await expect(release('a', 'n1')).rejects.toMatchObject({ code: 'NOT_ALLOCATED' });
    await complete('c', 'n1', 'a');
    await complete('c', 'n2', 'b');
    await complete('c', 'n3', 'a');
    await expect(complete('c', 'n3', 'a')).rejects.toMatchObject({ code: 'ALREADY_COMPLETED' });
    await complete('d', 'n1', 'd');
    await expectInvariants();

    await db
      .updateTable('nodes')
      .set({ status: 'dead' })
      .where('id', '=', nodeIds.n4 as number)
      .execute();
    expect(await reclaimFromDeadNodes(db, (now += 1000), 2)).toBe(2);
    expect(await reclaimFromDeadNodes(db, (now += 1000), 100)).toBe(4);
    expect(await reclaimFromDeadNodes(db, (now += 1000), 100)).toBe(0);
    await expectInvariants();

    const moved = await db.transaction().execute(async (trx) => {
      await trx.updateTable('assets').set({ url: 'http://h1.example.org/d-moved' }).where('id', '=', 'd').execute();
      return supersedeStaleCopies(
        trx,
        [{ assetId: 'd', fromUrl: 'http://h1.example.org/d', toUrl: 'http://h1.example.org/d-moved', fromSha256: null, toSha256: null }],
        'test',
        (now += 1000),
      );
    });
    expect(moved).toEqual(['d']);
    expect(await db.selectFrom('allocations').select('state').where('asset_id', '=', 'd').where('state', '=', 'superseded').execute()).toHaveLength(3);
    await expectInvariants();

    const due = now + 200 * HOUR;
    expect(await expireDueAllocations(db, failure, due)).toBeGreaterThan(0);
    expect(await expireDueAllocations(db, failure, due)).toBe(0);
    await expectInvariants();
    expect(await db.selectFrom('allocations').select('id').where('state', '=', 'active').execute()).toEqual([]);
  });
});
