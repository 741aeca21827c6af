import crypto from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { answerFor, sourceFile, type AuditAsked, type SourceFile } from '../../test/audit-holder.js';
import { startFileServer, type FileServer } from '../../test/file-server.js';
import { registerNode, useTestServer, type TestServer } from '../../test/server.js';
import { proofDepsOf } from './audits.routes.js';
import { expireAudits, runProofs } from './proof.service.js';

const HOUR = 3_600_000;
const GIB = 1024 ** 3;
const SIZE = 200_000;

type Node = Awaited<ReturnType<typeof registerNode>>;

const file = (name: string, size = SIZE) => sourceFile(name, size);
type File = SourceFile;
const honestAnswer = (item: AuditAsked, copy: File) => answerFor(item, copy);

describe.each(dialects)('proven copies on %s', (dialect) => {
  const suite = useTestServer(dialect, {
    verifySpotChecks: 3,
    sourceAllowPrivate: true,
    auditIntervalMs: HOUR,
    auditDeadlineMs: 60_000,
    auditsPerMinute: 60_000,
    nodeRateLimitPerMinute: 1_000_000,
  });
  let source: FileServer;
  beforeEach(async () => {
    source = await startFileServer();
  });
  afterEach(async () => {
    await source.close();
  });

  const passes = (server: TestServer) => ({
    prove: () => runProofs(server.ctx.db, server.ctx.dialect, proofDepsOf(server.ctx), 10_000, server.clock.now()),
    expire: () => expireAudits(server.ctx.db, proofDepsOf(server.ctx), server.clock.now()),
  });
  const heartbeat = async (server: TestServer, node: Node) => {
    const answer = await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
    expect(answer.status).toBe(200);
    return answer.body as {
      audits: {
        id: number;
        asset_id: string;
        kind: string;
        purpose: string;
        nonce: string | null;
        ranges: { offset: number; length: number }[];
        block: number | null;
        url: string;
      }[];
    };
  };
  const addAsset = (server: TestServer, copy: File, fields: Record<string, unknown> = {}) =>
    server.api.post(
      '/assets',
      [
        {
          id: copy.name,
          name: copy.name,
          url: `${source.url}/files/${copy.name}?size=${copy.data.length}`,
          priority: 5,
          size_bytes: copy.data.length,
          replicas_target: 1,
          ...fields,
        },
      ],
      server.adminToken,
    );
  const take = async (server: TestServer, node: Node) => {
    await heartbeat(server, node);
    const granted = await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name, max_assets: 1000 }, node.token);
    // 404: nothing to hand out (the seeds' contract).
    if (granted.status === 404) return [];
    expect(granted.status).toBe(200);
    return (granted.body as { id: string }[]).map((asset) => asset.id);
  };
  const complete = (server: TestServer, node: Node, copy: File, report: { sha256?: string; merkle_root?: string | null } = {}) =>
    server.api.post(
      '/complete',
      {
        asset_id: copy.name,
        node_id: node.name,
        sha256: report.sha256 ?? copy.sha256,
        bytes: copy.data.length,
        ...(report.merkle_root === null ? {} : { merkle_root: report.merkle_root ?? copy.merkleRoot }),
      },
      node.token,
    );
  const strikesOf = async (server: TestServer, node: Node) =>
    ((await server.api.get('/api/nodes', server.adminToken)).body as { node_id: number; strikes: number }[]).find((item) => item.node_id === node.id)?.strikes;
  const asset = async (server: TestServer, id: string) => (await server.api.get(`/assets/${id}`, server.adminToken)).body;

  it('counts a copy only once its holder answered nonced ranges the source confirms', async () => {
    const server = await suite.start();
    const copy = file('a');
    await addAsset(server, copy);
    const [holder, other] = [await registerNode(server, 'holder'), await registerNode(server, 'other')];
    expect(await take(server, holder)).toEqual(['a']);
    const completed = await complete(server, holder, copy);
    expect(completed.body).toMatchObject({ verified: false, proof: 'pending', copies: 0 });
    expect(await asset(server, 'a')).toMatchObject({ copies: 0, state: 'pending' });
    // The pending copy holds its place: nobody else downloads it meanwhile.
    expect(await take(server, other)).toEqual([]);

    expect((await heartbeat(server, holder)).audits).toEqual([]);
    expect(await passes(server).prove()).toMatchObject({ prepared: 1 });
    expect(source.requests.filter((request) => request.range !== undefined).map((request) => request.range)).toHaveLength(3);
    const [item] = (await heartbeat(server, holder)).audits;
    expect(item).toMatchObject({ asset_id: 'a', kind: 'ranges', purpose: 'spot_check', url: `/api/audits/${item?.id}` });
    expect(item?.ranges).toHaveLength(3);
    expect(item?.nonce).toMatch(/^[0-9a-f]{32}$/);

    const answered = await server.api.post(item!.url, honestAnswer(item!, copy), holder.token);
    expect(answered.body).toMatchObject({ verdict: 'passed' });
    expect(await asset(server, 'a')).toMatchObject({ copies: 1, state: 'rescued' });
    expect((await server.api.post(item!.url, honestAnswer(item!, copy), holder.token)).status).toBe(409);
    const proven = (await server.api.get('/events?kind=copy.proven', server.adminToken)).body.items;
    expect(proven[0]?.data).toMatchObject({ asset_id: 'a', by: 'spot_check' });
  });

  it('gives a liar who reports 100 random checksums no counted copy and strikes', async () => {
    const server = await suite.start({ maxStrikes: 1000 });
    const copies = Array.from({ length: 100 }, (_, index) => file(`liar-${index}`, 20_000));
    for (const copy of copies) await addAsset(server, copy);
    const liar = await registerNode(server, 'liar');
    expect(await take(server, liar)).toHaveLength(100);
    for (const copy of copies) {
      const random = () => crypto.randomBytes(32).toString('hex');
      expect((await complete(server, liar, copy, { sha256: random(), merkle_root: random() })).status).toBe(200);
    }
    expect(await passes(server).prove()).toMatchObject({ prepared: 100 });
    const audits = (await heartbeat(server, liar)).audits;
    expect(audits).toHaveLength(100);
    for (const item of audits) {
      const answer = await server.api.post(item.url, { hashes: item.ranges.map(() => crypto.randomBytes(32).toString('hex')) }, liar.token);
      expect(answer.body.verdict).toBe('failed');
    }
    const summary = (await server.api.get('/assets?limit=1000', server.adminToken)).body.items as { copies: number; state: string }[];
    expect(summary.every((item) => item.copies === 0 && item.state === 'pending')).toBe(true);
    expect(await strikesOf(server, liar)).toBe(100);
    expect((await server.api.get('/events?kind=allocation.lost&limit=1000', server.adminToken)).body.items).toHaveLength(100);
    // The lost copies are handed out again.
    const honest = await registerNode(server, 'honest');
    expect(await take(server, honest)).toHaveLength(100);
  });

  it('fails an answer remembered from an earlier audit, with its old nonce', async () => {
    const server = await suite.start();
    const copy = file('b');
    await addAsset(server, copy);
    const holder = await registerNode(server, 'holder');
    await take(server, holder);
    // No Merkle root: its audits read nonced ranges of the source too.
    await complete(server, holder, copy, { merkle_root: null });
    await passes(server).prove();
    const [first] = (await heartbeat(server, holder)).audits;
    const remembered = honestAnswer(first!, copy) as { hashes: string[] };
    expect((await server.api.post(first!.url, remembered, holder.token)).body.verdict).toBe('passed');

    server.clock.advance(HOUR + 1);
    expect(await passes(server).prove()).toMatchObject({ started: 1 }); // queued: its ranges are read next
    await passes(server).prove();
    const [second] = (await heartbeat(server, holder)).audits;
    expect(second).toMatchObject({ purpose: 'retention', kind: 'ranges' });
    expect(second!.nonce).not.toBe(first!.nonce);
    const replayed = await server.api.post(second!.url, { hashes: remembered.hashes.slice(0, second!.ranges.length) }, holder.token);
    expect(replayed.body.verdict).toBe('failed');
    const suspect = (await server.api.get(`/allocations?asset=b`, server.adminToken)).body.items[0];
    expect(suspect).toMatchObject({ state: 'completed' });
    expect(await asset(server, 'b')).toMatchObject({ copies: 1 });
  });

  it('counts a copy of a source without ranges once another holder agrees on checksum and Merkle root', async () => {
    const server = await suite.start();
    const copy = file('c');
    await addAsset(server, copy, { url: `${source.url}/norange/c?size=${SIZE}` });
    const [first, second, third] = [await registerNode(server, 'first'), await registerNode(server, 'second'), await registerNode(server, 'third')];
    await take(server, first);
    await complete(server, first, copy);
    await passes(server).prove();
    expect(await asset(server, 'c')).toMatchObject({ copies: 0, state: 'pending' });
    const unproven = (await server.api.get('/events?kind=copy.unproven', server.adminToken)).body;
    expect(unproven.items[0]?.data.reason).toMatch(/no byte ranges/);
    // An unproven copy does not hold its place: another holder is asked for one to agree with.
    expect(await take(server, second)).toEqual(['c']);
    await complete(server, second, copy);
    await passes(server).prove();
    // The witness past the target is kept but not counted (invariant 1).
    expect(await asset(server, 'c')).toMatchObject({ copies: 1, state: 'rescued' });
    const proven = (await server.api.get('/events?kind=copy.proven', server.adminToken)).body.items;
    expect(proven.map((event: { data: { by: string; node_id: number } }) => [event.data.by, event.data.node_id])).toEqual([['agreement', first.id]]);
    expect(await take(server, third)).toEqual([]);
  });

  it('audits counted copies by a random block and its Merkle path once two operators agree on the root, and loses one that fails twice', async () => {
    const server = await suite.start();
    const copy = file('d', 300_000);
    await addAsset(server, copy, { replicas_target: 2 });
    const [holder, peer, spare] = [await registerNode(server, 'holder'), await registerNode(server, 'peer'), await registerNode(server, 'spare')];
    for (const node of [holder, peer]) {
      await take(server, node);
      await complete(server, node, copy);
    }
    await passes(server).prove();
    for (const node of [holder, peer]) {
      const [spot] = (await heartbeat(server, node)).audits;
      await server.api.post(spot!.url, honestAnswer(spot!, copy), node.token);
    }
    expect(await asset(server, 'd')).toMatchObject({ copies: 2 });
    /** One round of retention audits: the peer answers honestly, the holder as `answer` says. */
    const round = async (
      answer: (item: { kind: string; nonce: string | null; ranges: { offset: number; length: number }[]; block: number | null }) => object,
    ) => {
      server.clock.advance(HOUR + 1);
      expect(await passes(server).prove()).toMatchObject({ started: 2 });
      const [peers] = (await heartbeat(server, peer)).audits;
      expect((await server.api.post(peers!.url, honestAnswer(peers!, copy), peer.token)).body.verdict).toBe('passed');
      const [item] = (await heartbeat(server, holder)).audits;
      expect(item).toMatchObject({ purpose: 'retention', kind: 'block' });
      return (await server.api.post(item!.url, answer(item!), holder.token)).body.verdict;
    };
    expect(await round((item) => honestAnswer(item, copy))).toBe('passed');

    const wrongBlock = (item: AuditAsked) => answerFor(item, copy, true);
    expect(await round(wrongBlock)).toBe('failed');
    expect(await asset(server, 'd')).toMatchObject({ copies: 2 });
    expect(await round(wrongBlock)).toBe('failed');
    expect(await asset(server, 'd')).toMatchObject({ copies: 1, state: 'pending' });
    expect((await server.api.get('/events?kind=allocation.lost', server.adminToken)).body.items[0]?.data).toMatchObject({ reason: 'audit_failed' });
    // The asset is rebuilt elsewhere: the holder that lost it cools down first.
    expect(await take(server, holder)).toEqual([]);
    expect(await take(server, spare)).toEqual(['d']);
  });

  it('records an audit not answered in time as a miss: a spot check missed loses the copy', async () => {
    const server = await suite.start();
    const copy = file('e');
    await addAsset(server, copy);
    const holder = await registerNode(server, 'holder');
    await take(server, holder);
    await complete(server, holder, copy);
    await passes(server).prove();
    const [item] = (await heartbeat(server, holder)).audits;
    server.clock.advance(60_001);
    expect((await heartbeat(server, holder)).audits).toEqual([]);
    const late = await server.api.post(item!.url, honestAnswer(item!, copy), holder.token);
    expect(late.status).toBe(409);
    expect(await passes(server).expire()).toBe(0);
    expect((await server.api.get('/events?kind=audit.missed', server.adminToken)).body.items).toHaveLength(1);
    expect(await asset(server, 'e')).toMatchObject({ copies: 0, state: 'pending' });
    expect(await strikesOf(server, holder)).toBe(1);
  });

  it('answers hostile audit answers with 4xx and changes nothing', async () => {
    const server = await suite.start();
    const copy = file('f');
    await addAsset(server, copy);
    const [holder, stranger] = [await registerNode(server, 'holder'), await registerNode(server, 'stranger')];
    await take(server, holder);
    await complete(server, holder, copy);
    await passes(server).prove();
    const [item] = (await heartbeat(server, holder)).audits;
    const post = (path: string, body: unknown, token: string) => server.api.post(path, body, token);
    expect((await post(item!.url, honestAnswer(item!, copy), stranger.token)).body).toMatchObject({ code: 'AUDIT_NOT_FOUND' });
    expect((await post('/api/audits/999999', { missing: true }, holder.token)).status).toBe(404);
    for (const [path, body] of [
      ['/api/audits/99999999999999999999', { missing: true }],
      [item!.url, { hashes: ['nothex'] }],
      [item!.url, { hashes: [], extra: 1 }],
      [item!.url, { block: 'A'.repeat(100_000) }],
      [item!.url, { hashes: 'a\u0000' }],
    ] as const) {
      const refused = await post(path, body, holder.token);
      expect(refused.status).toBe(422);
      expect(refused.body).toMatchObject({ code: 'VALIDATION_ERROR', detail: expect.any(String) });
    }
    expect((await post(item!.url, { missing: true }, server.adminToken)).status).toBe(403);
    expect((await heartbeat(server, holder)).audits).toHaveLength(1);
    expect((await post(item!.url, honestAnswer(item!, copy), holder.token)).body.verdict).toBe('passed');
  });

  it('takes new work away from a node whose audit score falls below the minimum, and tells admins', async () => {
    const server = await suite.start({ maxStrikes: 1000 });
    const copies = Array.from({ length: 5 }, (_, index) => file(`s-${index}`, 20_000));
    for (const copy of copies) await addAsset(server, copy);
    const node = await registerNode(server, 'sloppy');
    await take(server, node);
    for (const copy of copies) await complete(server, node, copy);
    await passes(server).prove();
    for (const item of (await heartbeat(server, node)).audits) await server.api.post(item.url, { missing: true }, node.token);
    await addAsset(server, file('later', 20_000));
    const refused = await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name }, node.token);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('NODE_AUDIT_SCORE_LOW');
    const events = (await server.api.get('/events?kind=node.audit_score_low', server.adminToken)).body.items;
    expect(events).toHaveLength(1);
    expect(events[0]?.data).toMatchObject({ passed: 0, failed: 5 });

    // The failures count for AUDIT_SCORE_WINDOW_DAYS: the pass after the window recounts the node's
    // score without them, and the node gets work again.
    const score = () => server.ctx.db.selectFrom('nodes').select(['audits_passed', 'audits_failed']).where('id', '=', node.id).executeTakeFirstOrThrow();
    server.clock.advance(server.config.auditScoreWindowMs - 60_000);
    await passes(server).prove();
    expect(await score()).toMatchObject({ audits_passed: 0, audits_failed: 5 });
    server.clock.advance(2 * 3_600_000);
    await passes(server).prove();
    expect(await score()).toMatchObject({ audits_passed: 0, audits_failed: 0 });
    await server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * 1024 ** 3 }, node.token);
    expect((await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name }, node.token)).status).toBe(200);
  });
});
