import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pieceLayerPath } from '../src/agent/piece-layer-file.js';
import { proofDepsOf } from '../src/audits/audits.routes.js';
import { expireAudits, runProofs } from '../src/audits/proof.service.js';
import { createFakeClock } from '../src/clock.js';
import { PEERS_HOST } from '../src/sources/source-host.js';
import { createAgentLauncher, keptCopy, waitFor as waitUntil, type AgentProcess } from './agent-process.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { sha256Of, startFileServer, type FileServer } from './file-server.js';
import { startTestServer, type TestServer } from './server.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
// One copy of several 1 MiB pieces, one of a single piece, one smaller than the three 64 KiB ranges of its spot check.
const SIZES: Record<string, number> = { alpha: 2_700_000, beta: 300_000, gamma: 100_000 };

let scratch: string;
let server: TestServer;
const launcher = createAgentLauncher(
  () => scratch,
  () => server.url,
);
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000) =>
  waitUntil(what, check, () => launcher.describe(), timeoutMs);

interface CopyDetail {
  id: number;
  node_name: string;
  proof: string;
  last_audit: { at: string; verdict: string } | null;
}

describe.each(dialects)('proven copies with real agents on %s', (dialect) => {
  let database: TestDatabase;
  let files: FileServer;

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    // The agents compare audit deadlines with their own clock: the server's starts at real time.
    server = await startTestServer(
      database,
      {
        verifySpotChecks: 3,
        sourceAllowPrivate: true,
        auditIntervalMs: HOUR,
        auditDeadlineMs: 10 * MINUTE,
        auditsPerMinute: 60_000,
        nodeRateLimitPerMinute: 1_000_000,
        nodeTimeoutMs: 5 * MINUTE,
      },
      createFakeClock(Date.now()),
    );
    files = await startFileServer();
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-proofs-'));
  });
  afterEach(async () => {
    launcher.killAll();
    await files.close();
    await server.stop();
    await database.drop();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  const prove = () => runProofs(server.ctx.db, server.ctx.dialect, proofDepsOf(server.ctx), 10_000, server.clock.now());
  const expire = () => expireAudits(server.ctx.db, proofDepsOf(server.ctx), server.clock.now());
  const assetOf = async (id: string) => (await server.api.get(`/assets/${id}`, server.adminToken)).body;
  const copiesOf = async (id: string): Promise<CopyDetail[]> => (await assetOf(id)).copies_detail;
  const completedCopies = () =>
    database.handle.db
      .selectFrom('allocations')
      .innerJoin('nodes', 'nodes.id', 'allocations.node_id')
      .select(['allocations.id', 'allocations.asset_id', 'allocations.proof', 'allocations.source_host', 'nodes.name'])
      .where('allocations.state', '=', 'completed')
      .orderBy('allocations.id')
      .execute();
  /** The piece layer beside an agent's copy: a header naming its size and the asset's agreed root, then 32 bytes per MiB. */
  const expectPieceLayer = async (agent: AgentProcess, id: string) => {
    const { merkle_root: root } = await database.handle.db.selectFrom('assets').select('merkle_root').where('id', '=', id).executeTakeFirstOrThrow();
    const content = fs.readFileSync(pieceLayerPath(keptCopy(agent.dataDirectory, id)));
    const end = content.indexOf('\n');
    expect(root).toMatch(/^[0-9a-f]{64}$/);
    expect(content.subarray(0, end).toString()).toBe(`dispatcher-pieces 1 ${SIZES[id]} ${root}`);
    expect(content.length - end - 1).toBe(32 * Math.ceil((SIZES[id] as number) / (1024 * 1024)));
  };
  const eventsOf = async (kind: string) => (await server.api.get(`/events?kind=${kind}&limit=1000`, server.adminToken)).body.items as { data: any }[];

  it('proves every copy by spot check, audits the intact ones by block, and re-replicates a copy deleted from disk', async () => {
    await server.api.post(
      '/assets',
      Object.entries(SIZES).map(([name, size]) => ({
        id: name,
        name: `${name}.bin`,
        url: `${files.url}/files/${name}?size=${size}`,
        size_bytes: size,
        sha256: sha256Of(name, size),
        priority: 5,
        replicas_target: 2,
      })),
      server.adminToken,
    );
    const enrollment = (await server.api.post('/api/enrollment-tokens', {}, server.adminToken)).body.token;
    // No scrub: the audits alone are to find the deleted copies.
    const agents = new Map<string, AgentProcess>(
      ['node-a', 'node-b', 'node-c'].map((name) => [name, launcher.start(name, enrollment, { AGENT_SCRUB_MB_S: '0' })]),
    );

    // 1. Completed copies wait for their spot check: none counts, and each holds its place.
    const completed = await waitFor('every copy to be completed', async () => {
      const rows = await completedCopies();
      return rows.length === 2 * Object.keys(SIZES).length && rows;
    });
    expect(completed.every((copy) => copy.proof === 'pending')).toBe(true);
    for (const id of Object.keys(SIZES)) expect(await assetOf(id)).toMatchObject({ copies: 0, state: 'pending' });

    expect(await prove()).toMatchObject({ prepared: completed.length });
    for (const id of Object.keys(SIZES)) {
      await waitFor(`${id} to be rescued`, async () => (await assetOf(id)).state === 'rescued');
      const copies = await copiesOf(id);
      expect(copies.map((copy) => copy.proof)).toEqual(['proven', 'proven']);
      expect(copies.every((copy) => copy.last_audit?.verdict === 'passed')).toBe(true);
      expect(await assetOf(id)).toMatchObject({ copies: 2 });
      for (const copy of copies) await expectPieceLayer(agents.get(copy.node_name)!, id);
    }
    const spotChecked = await eventsOf('copy.proven');
    expect(spotChecked).toHaveLength(completed.length);
    expect(spotChecked.every((event) => event.data.by === 'spot_check')).toBe(true);

    // 2. Two copies deleted on different nodes, one with its piece layer, one without; a third loses its piece layer only.
    const [alphaCopies, betaCopies, gammaCopies] = await Promise.all(['alpha', 'beta', 'gamma'].map(copiesOf));
    const alphaLost = alphaCopies![0]!;
    const betaLost = betaCopies!.find((copy) => copy.node_name !== alphaLost.node_name)!;
    const gammaHolder = gammaCopies![0]!;
    const alphaFile = keptCopy(agents.get(alphaLost.node_name)!.dataDirectory, 'alpha');
    const betaFile = keptCopy(agents.get(betaLost.node_name)!.dataDirectory, 'beta');
    const gammaLayer = pieceLayerPath(keptCopy(agents.get(gammaHolder.node_name)!.dataDirectory, 'gamma'));
    fs.rmSync(alphaFile);
    fs.rmSync(betaFile);
    fs.rmSync(pieceLayerPath(betaFile));
    fs.rmSync(gammaLayer);

    // 3. A whole audit interval later every copy is due: each is asked a block with its Merkle path.
    server.clock.advance(HOUR + 1000);
    const auditedFrom = server.clock.now();
    expect(await prove()).toMatchObject({ started: completed.length });
    const lostIds = [alphaLost.id, betaLost.id];
    await waitFor('the deleted copies to be lost', async () => (await eventsOf('allocation.lost')).length === 2);
    const lost = await eventsOf('allocation.lost');
    expect(lost.map((event) => event.data.reason)).toEqual(['audit_failed', 'audit_failed']);
    expect(lost.map((event) => event.data.detail)).toEqual(['its holder reports the copy missing', 'its holder reports the copy missing']);
    const ended = await server.api.get('/allocations?state=lost', server.adminToken);
    expect(ended.body.items.map((allocation: { id: number }) => allocation.id).sort()).toEqual([...lostIds].sort());

    // The intact copies pass, the one without its piece layer too (the agent rebuilds it).
    const intactIds = completed.map((copy) => copy.id).filter((id) => !lostIds.includes(id));
    const audited = await waitFor('every intact copy to be audited', async () => {
      const copies = (await Promise.all(Object.keys(SIZES).map(copiesOf))).flat().filter((copy) => intactIds.includes(copy.id));
      return copies.every((copy) => copy.last_audit !== null && Date.parse(copy.last_audit.at) >= auditedFrom) && copies;
    });
    expect(audited).toHaveLength(intactIds.length);
    for (const copy of audited) expect(copy).toMatchObject({ proof: 'proven', last_audit: { verdict: 'passed' } });
    await expectPieceLayer(agents.get(gammaHolder.node_name)!, 'gamma');
    const retention = await database.handle.db.selectFrom('audits').select(['allocation_id', 'method', 'state']).where('kind', '=', 'retention').execute();
    expect(retention).toHaveLength(completed.length);
    expect(retention.every((audit) => audit.method === 'block')).toBe(true);
    expect(retention.filter((audit) => audit.state === 'passed')).toHaveLength(completed.length - 2);

    // 4. The lost copies are handed out again (to whichever node without a copy asks first, the one that lost it
    // included), downloaded from the source, and proven by their own spot check.
    for (const id of ['alpha', 'beta']) {
      await waitFor(`${id} to be rescued again`, async () => {
        await prove();
        await expire();
        const copies = await copiesOf(id);
        return copies.length === 2 && copies.every((copy) => copy.proof === 'proven') && (await assetOf(id)).state === 'rescued';
      });
    }
    const again = (await completedCopies()).filter((copy) => !completed.some((first) => first.id === copy.id));
    expect(again.map((copy) => copy.asset_id).sort()).toEqual(['alpha', 'beta']);
    expect(again.every((copy) => copy.proof === 'proven' && copy.source_host !== PEERS_HOST)).toBe(true);
    const proven = await eventsOf('copy.proven');
    expect(proven).toHaveLength(completed.length + 2);
    expect(proven.every((event) => event.data.by === 'spot_check')).toBe(true);
    for (const copy of again) await expectPieceLayer(agents.get(copy.name)!, copy.asset_id);
    for (const id of Object.keys(SIZES)) expect(await assetOf(id)).toMatchObject({ copies: 2, state: 'rescued' });
    // The holders said so, and forgot the copies they no longer had (their piece layers too).
    for (const [copy, id] of [
      [alphaLost, 'alpha'],
      [betaLost, 'beta'],
    ] as const) {
      const agent = agents.get(copy.node_name)!;
      expect(agent.output()).toMatch(new RegExp(`block of ${id}\\): its file is gone from disk; answering that the copy is not here`));
      expect(fs.readFileSync(path.join(agent.dataDirectory, 'manifest.jsonl'), 'utf8')).toContain(`"op":"remove","asset_id":"${id}"`);
    }
  }, 120_000);
});
