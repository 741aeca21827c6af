import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { dialects } from '../../test/databases.js';
import { registerNode, startTestServer, useTestServer, type TestServer } from '../../test/server.js';
import { nextTransfer, putChunk, type HolderNode, type TransferItem } from '../../test/transfer-holder.js';
import type { Config } from '../config.js';

const KIB = 1024;
const GIB = 1024 ** 3;
const content = crypto.randomBytes(300 * KIB + 17);
const sha256 = crypto.createHash('sha256').update(content).digest('hex');

type Node = HolderNode;
type Item = TransferItem;

describe.each(dialects)('restore through transfers on %s', (dialect) => {
  const suite = useTestServer(dialect, { transferStartMs: 3000, nodeRateLimitPerMinute: 100_000, sourceAllowPrivate: true });
  let server: TestServer;
  let user: string;

  /** Two nodes holding verified copies of asset "a", alive, and a plain user. */
  async function rescued(overrides: Partial<Config> = {}, asset: Record<string, unknown> = {}): Promise<Node[]> {
    server = await suite.start(overrides);
    const body = {
      id: 'a',
      url: 'http://127.0.0.1:9/gone.bin',
      name: 'data file.bin',
      priority: 5,
      size_bytes: content.length,
      sha256,
      replicas_target: 2,
      ...asset,
    };
    expect((await server.api.post('/assets', [body], server.adminToken)).status).toBe(200);
    const nodes = [await registerNode(server, 'holder-1'), await registerNode(server, 'holder-2')];
    for (const node of nodes) {
      expect((await server.api.post('/allocate', { free_space_gb: 10, node_id: node.name }, node.token)).status).toBe(200);
      const completion = await server.api.post(
        '/complete',
        { asset_id: 'a', node_id: node.name, sha256: body.sha256 ?? sha256, bytes: content.length },
        node.token,
      );
      expect(completion.status).toBe(200);
      await beat(node);
    }
    await server.api.post('/auth/signup', { username: 'reader', password: 'password-1' });
    user = (await server.api.post('/auth/login', { username: 'reader', password: 'password-1' })).body.token;
    return nodes;
  }
  const beat = (node: Node) => server.api.post(`/api/nodes/${node.id}/heartbeat`, { free_bytes: 10 * GIB }, node.token);
  const restore = (headers: Record<string, string> = {}, token = user, target = server) =>
    fetch(`${target.url}/assets/a/content`, { headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });
  const poll = (node: Node, target = server) => nextTransfer(target, node);
  const put = (node: Node, item: Item, start: number, bytes: Buffer, target = server) => putChunk(target, node, item, start, bytes);
  /** Sends `item` in chunks from `source` (the copy as this node has it), up to `stopAt` bytes of the copy. */
  const send = async (node: Node, item: Item, source = content, stopAt = item.offset + item.length, target = server) => {
    for (let start = item.offset; start < stopAt; start += 64 * KIB) {
      const answer = await put(node, item, start, source.subarray(start, Math.min(stopAt, start + 64 * KIB)), target);
      if (answer.status !== 200) return answer;
      await answer.json();
    }
    return undefined;
  };
  const bodyOf = async (response: Response) => Buffer.from(await response.arrayBuffer());
  /** When each holder of "a" last showed its copy intact, by node id. */
  const provedAt = async () =>
    Object.fromEntries(
      (await suite.database.handle.db.selectFrom('allocations').select(['node_id', 'proved_at']).where('asset_id', '=', 'a').execute()).map((row) => [
        Number(row.node_id),
        row.proved_at,
      ]),
    );
  const events = async (kind: string) =>
    (await server.api.get(`/events?kind=${kind}&limit=50`, server.adminToken)).body.items as { subject_id: string; data: Record<string, unknown> }[];

  it('streams the exact bytes of a copy from a holder that long-polls, with length, ETag and name', async () => {
    const [first, second] = await rescued();
    const answer = restore();
    const item = await poll(first!);
    expect(item).toMatchObject({ asset_id: 'a', offset: 0, length: content.length, size: content.length, sha256 });
    await send(first!, item);
    const response = await answer;
    expect(response.status).toBe(200);
    expect(response.headers.get('content-length')).toBe(String(content.length));
    expect(response.headers.get('etag')).toBe(`"${sha256}"`);
    expect(response.headers.get('content-disposition')).toContain('filename="data file.bin"');
    expect((await bodyOf(response)).equals(content)).toBe(true);
    expect((await events('transfer.done'))[0]?.data).toMatchObject({ asset_id: 'a', node_id: first!.id, reached: content.length });
    expect((await server.api.get(`/api/nodes/${first!.id}/transfers`, first!.token)).body.transfers).toEqual([]);
    // The control plane hashed the whole copy itself: that proves its holder's copy (the holder hashes nothing).
    expect(await provedAt()).toEqual({ [first!.id]: server.clock.now(), [second!.id]: null });
  });

  it('goes on from the same byte with the other holder when the first gives up midway', async () => {
    const [first, second] = await rescued();
    const answer = restore();
    const item = await poll(first!);
    await send(first!, item, content, 128 * KIB);
    expect((await server.api.post(`/api/transfers/${item.id}/fail`, { reason: 'unreadable', detail: 'disk busy' }, first!.token)).status).toBe(200);
    const next = await poll(second!);
    expect(next).toMatchObject({ offset: 128 * KIB, length: content.length - 128 * KIB });
    await send(second!, next);
    expect((await bodyOf(await answer)).equals(content)).toBe(true);
    // Refused as unreadable, not lost: the first copy still counts. Neither holder sent the whole copy: neither is proved by it.
    expect((await server.api.get('/assets/a', user)).body.copies).toBe(2);
    expect(Object.values(await provedAt())).toEqual([null, null]);
  });

  it('cuts the answer off before its last byte when the bytes relayed are not the copy, and takes the liar out', async () => {
    const [first] = await rescued({}, { replicas_target: 2 });
    const altered = Buffer.from(content);
    altered[1000] = (altered[1000] as number) ^ 0xff;
    const answer = restore();
    const item = await poll(first!);
    await send(first!, item, altered);
    const response = await answer;
    await expect(bodyOf(response)).rejects.toThrow();
    const asset = (await server.api.get('/assets/a', user)).body;
    expect(asset.copies).toBe(1);
    expect(asset.copies_detail.find((copy: { node_id: number }) => copy.node_id === first!.id)).toBeUndefined();
    expect((await events('asset.restore_mismatch'))[0]?.data).toMatchObject({ nodes: [first!.id], expected: sha256 });
    const nodes = (await server.api.get('/api/nodes', server.adminToken)).body as { node_id: number; strikes: number }[];
    expect(nodes.find((node) => node.node_id === first!.id)?.strikes).toBe(1);
  });

  it('moves on when a holder sends bytes from the wrong offset, and strikes it', async () => {
    const [first, second] = await rescued();
    const answer = restore();
    const item = await poll(first!);
    const wrong = await put(first!, item, 4096, content.subarray(4096, 8192));
    expect(wrong.status).toBe(409);
    expect((await wrong.json()).code).toBe('TRANSFER_OFFSET');
    expect((await put(first!, item, 0, content.subarray(0, 4096))).status).toBe(409);
    await send(second!, await poll(second!));
    expect((await bodyOf(await answer)).equals(content)).toBe(true);
  });

  it('serves one Range as 206 and refuses a range outside the copy with 416', async () => {
    const [first] = await rescued();
    const answer = restore({ range: 'bytes=1000-1999' });
    const item = await poll(first!);
    expect(item).toMatchObject({ offset: 1000, length: 1000 });
    await send(first!, item);
    const response = await answer;
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe(`bytes 1000-1999/${content.length}`);
    expect((await bodyOf(response)).equals(content.subarray(1000, 2000))).toBe(true);
    const outside = await restore({ range: `bytes=${content.length}-` });
    expect(outside.status).toBe(416);
    expect(outside.headers.get('content-range')).toBe(`bytes */${content.length}`);
  });

  it('answers 503 NO_HOLDER_ONLINE with Retry-After and the holders, 404 without a copy or an asset', async () => {
    await rescued({ nodeTimeoutMs: 60_000 });
    server.clock.advance(120_000);
    const offline = await restore();
    expect(offline.status).toBe(503);
    expect(offline.headers.get('retry-after')).toBe('30');
    const body = await offline.json();
    expect(body).toMatchObject({ code: 'NO_HOLDER_ONLINE', copies: 2 });
    expect(body.holders.map((holder: { node: string }) => holder.node).sort()).toEqual(['holder-1', 'holder-2']);
    await server.api.post('/assets', [{ id: 'b', url: 'http://127.0.0.1:9/b', name: 'b', priority: 5 }], server.adminToken);
    const none = await fetch(`${server.url}/assets/b/content`, { headers: { authorization: `Bearer ${user}` } });
    expect([none.status, (await none.json()).code]).toEqual([404, 'NO_COPY']);
    const unknown = await fetch(`${server.url}/assets/nope/content`, { headers: { authorization: `Bearer ${user}` } });
    expect([unknown.status, (await unknown.json()).code]).toEqual([404, 'ASSET_NOT_FOUND']);
  });

  it('moves a transfer on when its holder never starts, and refuses another node and unknown transfers', async () => {
    const [first, second] = await rescued({ transferStartMs: 2000 });
    const answer = restore();
    const item = await poll(first!);
    // holder-2 waits on its long-poll meanwhile, so it is asked the moment holder-1's time is up.
    const next = poll(second!);
    const foreign = await put(second!, item, 0, content.subarray(0, 10));
    expect([foreign.status, (await foreign.json()).code]).toEqual([403, 'FORBIDDEN']);
    const unknown = await fetch(`${server.url}/api/transfers/999999`, { method: 'PUT', headers: { authorization: `Bearer ${first!.token}` } });
    expect(unknown.status).toBe(404);
    // holder-1 stays silent past TRANSFER_START_SECONDS: the relay asks holder-2.
    await send(second!, await next);
    expect((await bodyOf(await answer)).equals(content)).toBe(true);
    const late = await put(first!, item, 0, content.subarray(0, 10));
    expect([late.status, (await late.json()).code]).toEqual([409, 'TRANSFER_ENDED']);
    expect((await events('transfer.expired'))[0]?.data).toMatchObject({ node_id: first!.id });
  });

  it('takes a copy its holder reports missing out of the count, and records copies it checked', async () => {
    const [first, second] = await rescued();
    const report = await server.api.post(
      `/api/nodes/${first!.id}/copies`,
      {
        lost: [
          { asset_id: 'a', reason: 'missing' },
          { asset_id: 'other', reason: 'corrupt' },
        ],
      },
      first!.token,
    );
    expect(report.body).toEqual({ checked: 0, lost: 1 });
    const checked = await server.api.post(`/api/nodes/${second!.id}/copies`, { checked: ['a'] }, second!.token);
    expect(checked.body).toEqual({ checked: 1, lost: 0 });
    const asset = (await server.api.get('/assets/a', user)).body;
    expect(asset).toMatchObject({ copies: 1, state: 'pending' });
    expect((await events('allocation.lost'))[0]?.data).toMatchObject({ asset_id: 'a', node_id: first!.id, reason: 'missing' });
  });

  it('follows RESTORE_ACCESS: admins only refuses a user; public needs no token', async () => {
    const [first] = await rescued({ restoreAccess: 'admins' });
    expect((await restore()).status).toBe(403);
    await server.stop();
    const open = await startTestServer(suite.database, { restoreAccess: 'public', nodeRateLimitPerMinute: 100_000 }, server.clock);
    try {
      const answer = restore({ range: 'bytes=0-99' }, '', open);
      await send(first!, await poll(first!, open), content, 100, open);
      expect((await bodyOf(await answer)).equals(content.subarray(0, 100))).toBe(true);
    } finally {
      await open.stop();
    }
  });

  it('redirects to the source while it serves the same size, unless prefer_source=false', async () => {
    const source = await import('node:http').then(({ createServer }) =>
      createServer((_request, response) => response.writeHead(206, { 'content-range': `bytes 0-0/${content.length}`, 'content-length': '1' }).end('x')),
    );
    await new Promise<void>((resolve) => source.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(source.address() as { port: number }).port}/file.bin`;
    try {
      const [first] = await rescued({}, { url });
      const redirected = await restore();
      expect(redirected.url).toBe(url);
      await redirected.arrayBuffer();
      const relayed = fetch(`${server.url}/assets/a/content?prefer_source=false`, { headers: { authorization: `Bearer ${user}` } });
      await send(first!, await poll(first!));
      expect((await bodyOf(await relayed)).equals(content)).toBe(true);
    } finally {
      source.close();
    }
  });

  if (dialect === 'postgres') {
    it('relays between instances: the requester on one, the holder on the other', async () => {
      const [first] = await rescued();
      const other = await startTestServer(suite.database, { transferStartMs: 3000, nodeRateLimitPerMinute: 100_000 }, server.clock);
      try {
        const answer = restore({}, user, server);
        const item = await poll(first!, other);
        await send(first!, item, content, item.offset + item.length, other);
        expect((await bodyOf(await answer)).equals(content)).toBe(true);
      } finally {
        await other.stop();
      }
    });
  }
});
