import crypto from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import type dns from 'node:dns';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { afterEach, describe, expect, it } from 'vitest';
import { createAddressPolicy, createSafeFetch, parseAllowPrivate, RefusedDestinationError } from './safe-fetch.js';

interface TestServer {
  origin: string;
  /** Every request the server received, in order. */
  requests: http.IncomingMessage[];
  /** Sockets ever opened to the server, so a test can assert nothing connected at all. */
  connections: number;
}

const openServers: http.Server[] = [];

afterEach(async () => {
  await Promise.all(
    openServers.splice(0).map((server) => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    }),
  );
});

async function startServer(
  host: string,
  handle: (request: http.IncomingMessage, response: http.ServerResponse) => void = answerOk,
  port = 0,
): Promise<TestServer> {
  const state: TestServer = { origin: '', requests: [], connections: 0 };
  const server = http.createServer((request, response) => {
    state.requests.push(request);
    handle(request, response);
  });
  server.on('connection', () => state.connections++);
  openServers.push(server);
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  state.origin = `http://${host}:${(server.address() as AddressInfo).port}`;
  return state;
}

function answerOk(_request: http.IncomingMessage, response: http.ServerResponse): void {
  response.end('ok');
}

function redirectTo(location: string, status = 302) {
  return (_request: http.IncomingMessage, response: http.ServerResponse) => {
    response.writeHead(status, { location }).end();
  };
}

/** Counts connection attempts undici starts, to prove a refusal happened before any of them. */
function countConnectAttempts(): { readonly count: number; stop(): void } {
  const counter = { count: 0, stop: () => diagnostics.unsubscribe('undici:client:beforeConnect', onConnect) };
  const onConnect = () => counter.count++;
  diagnostics.subscribe('undici:client:beforeConnect', onConnect);
  return counter;
}

const userAgent = 'dispatcher-agent/test';

describe('safe fetch, default policy', () => {
  const safeFetch = createSafeFetch({ allowPrivate: false, userAgent });

  it.each([
    'http://127.0.0.1:8080/',
    'http://[::1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://0x7f.1/',
    'http://2130706433/',
    'http://0/',
    'http://127.1/',
    'http://10.0.0.1/',
    'http://192.168.1.1/',
    'http://169.254.169.254/latest/meta-data/',
    'http://[fd00::1]/',
    'http://100.64.0.1/',
    'https://172.16.0.1/',
  ])('refuses %s before any connection attempt', async (url) => {
    const attempts = countConnectAttempts();
    try {
      const error = await safeFetch(url, {}).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(RefusedDestinationError);
      expect((error as RefusedDestinationError).code).toBe('REFUSED_DESTINATION');
      expect((error as Error).message).toMatch(/refused to fetch from .*AGENT_ALLOW_PRIVATE_NETWORKS/);
      expect(attempts.count).toBe(0);
    } finally {
      attempts.stop();
    }
  });

  it('names the refused address and how to allow it', async () => {
    await expect(safeFetch('http://0x7f.1/', {})).rejects.toThrow(
      'refused to fetch from 127.0.0.1 (loopback/private address); set AGENT_ALLOW_PRIVATE_NETWORKS=true or list the network to allow it',
    );
  });

  it('refuses a name that resolves to loopback at connect time, and the server sees nothing', async () => {
    const server = await startServer('127.0.0.1');
    const port = new URL(server.origin).port;
    const error = await safeFetch(`http://localhost:${port}/`, {}).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RefusedDestinationError);
    expect((error as RefusedDestinationError).code).toBe('REFUSED_DESTINATION');
    expect((error as Error).message).toMatch(/^refused to fetch from localhost \((127\.0\.0\.1|::1)\)/);
    expect(server.connections).toBe(0);
  });

  it.each(['file:///etc/passwd', 'ftp://example.org/x', 'data:text/plain,hi'])('refuses the non-http URL %s', async (url) => {
    await expect(safeFetch(url, {})).rejects.toBeInstanceOf(RefusedDestinationError);
  });
});

describe('safe fetch, DNS rebinding', () => {
  it('checks the address each connection uses, so a name turning private after a first answer is refused', async () => {
    const allowed = await startServer('127.0.0.2', (_request, response) => response.writeHead(200, { connection: 'close' }).end('first'));
    const port = Number(new URL(allowed.origin).port);
    const forbidden = await startServer('127.0.0.1', answerOk, port);
    // A stand-in for an attacker's DNS: the first answer is acceptable, every later one is loopback.
    const answers = ['127.0.0.2'];
    const resolve = async (): Promise<dns.LookupAddress[]> => [{ address: answers.shift() ?? '127.0.0.1', family: 4 }];
    const safeFetch = createSafeFetch({ allowPrivate: ['127.0.0.2/32'], userAgent }, resolve);

    const first = await safeFetch(`http://rebind.test:${port}/`, {});
    expect(await first.text()).toBe('first');
    await expect(safeFetch(`http://rebind.test:${port}/`, {})).rejects.toMatchObject({
      code: 'REFUSED_DESTINATION',
      message: expect.stringContaining('rebind.test (127.0.0.1)'),
    });
    expect(forbidden.connections).toBe(0);
  });

  it('refuses a name when any of its addresses is private', async () => {
    const resolve = async (): Promise<dns.LookupAddress[]> => [
      { address: '127.0.0.2', family: 4 },
      { address: '10.0.0.7', family: 4 },
    ];
    const safeFetch = createSafeFetch({ allowPrivate: ['127.0.0.2'], userAgent }, resolve);
    await expect(safeFetch('http://mixed.test:8080/', {})).rejects.toMatchObject({ code: 'REFUSED_DESTINATION', message: expect.stringContaining('10.0.0.7') });
  });
});

describe('safe fetch, allow-listed networks', () => {
  const safeFetch = createSafeFetch({ allowPrivate: ['127.0.0.2/32', '127.0.0.3'], userAgent, maxRedirects: 3 });

  it('lets an allowed host answer but refuses its redirect to loopback, which then sees no request', async () => {
    const forbidden = await startServer('127.0.0.1');
    const allowed = await startServer('127.0.0.2', redirectTo(`${forbidden.origin}/secret`));
    await expect(safeFetch(`${allowed.origin}/file`, {})).rejects.toMatchObject({ code: 'REFUSED_DESTINATION', message: expect.stringContaining('127.0.0.1') });
    expect(allowed.requests).toHaveLength(1);
    expect(forbidden.connections).toBe(0);
  });

  it('follows a redirect chain within allowed hosts', async () => {
    const start = await startServer('127.0.0.2', (request, response) => {
      if (request.url === '/final') response.end('arrived');
      else redirectTo(`${middle.origin}/hop`, 301)(request, response);
    });
    const middle = await startServer('127.0.0.3', redirectTo(`${start.origin}/final`, 307));
    const response = await safeFetch(`${start.origin}/begin`, {});
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('arrived');
    expect(start.requests.map((request) => request.url)).toEqual(['/begin', '/final']);
    expect(middle.requests.map((request) => request.url)).toEqual(['/hop']);
  });

  it('gives up after maxRedirects with a clear error', async () => {
    const loop = await startServer('127.0.0.2', redirectTo('/again'));
    await expect(safeFetch(`${loop.origin}/`, {})).rejects.toThrow(/after 3 redirects/);
    expect(loop.requests).toHaveLength(4);
  });

  it.each(['file:///etc/passwd', 'gopher://127.0.0.2/x'])('refuses a redirect to %s', async (location) => {
    const server = await startServer('127.0.0.2', redirectTo(location));
    await expect(safeFetch(`${server.origin}/`, {})).rejects.toBeInstanceOf(RefusedDestinationError);
  });
});

describe('safe fetch, private networks allowed', () => {
  const safeFetch = createSafeFetch({ allowPrivate: true, userAgent });

  it('reaches loopback by address and by name, sending the User-Agent', async () => {
    const server = await startServer('127.0.0.1');
    const port = new URL(server.origin).port;
    expect(await (await safeFetch(`${server.origin}/`, {})).text()).toBe('ok');
    expect(await (await safeFetch(`http://localhost:${port}/`, {})).text()).toBe('ok');
    expect(server.requests.map((request) => request.headers['user-agent'])).toEqual([userAgent, userAgent]);
  });

  it('keeps Range and If-Range across a redirect and never sends authorization or cookie', async () => {
    const server = await startServer('127.0.0.1', (request, response) => {
      if (request.url === '/old') redirectTo('/new')(request, response);
      else response.writeHead(206, { 'content-range': 'bytes 5-6/7' }).end('56');
    });
    const response = await safeFetch(`${server.origin}/old`, { headers: { range: 'bytes=5-', 'if-range': '"v1"', Authorization: 'Bearer x', cookie: 'a=b' } });
    expect(response.status).toBe(206);
    expect(response.headers.get('content-range')).toBe('bytes 5-6/7');
    await response.body?.cancel();
    for (const request of server.requests) {
      expect(request.headers).toMatchObject({ range: 'bytes=5-', 'if-range': '"v1"', 'user-agent': userAgent });
      expect(request.headers).not.toHaveProperty('authorization');
      expect(request.headers).not.toHaveProperty('cookie');
    }
    expect(server.requests.map((request) => request.url)).toEqual(['/old', '/new']);
  });

  it('returns a body that streams through Readable.fromWeb into a file', async () => {
    const payload = crypto.randomBytes(3 * 1024 * 1024 + 17);
    const server = await startServer('127.0.0.1', (_request, response) => response.writeHead(200, { etag: '"e1"' }).end(payload));
    const response = await safeFetch(`${server.origin}/big`, {});
    expect(response.headers.get('etag')).toBe('"e1"');
    const directory = await fsp.mkdtemp(path.join(os.tmpdir(), 'safe-fetch-'));
    try {
      const file = path.join(directory, 'big.bin');
      await pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), fs.createWriteStream(file));
      expect((await fsp.readFile(file)).equals(payload)).toBe(true);
    } finally {
      await fsp.rm(directory, { recursive: true, force: true });
    }
  });
});

describe('address policy', () => {
  const isPublic = createAddressPolicy(false);

  it.each([
    '8.8.8.8',
    '1.1.1.1',
    '100.63.255.255',
    '100.128.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '192.169.0.1',
    '11.0.0.1',
    '2606:4700::1',
    '2001:4860:4860::8888',
    '::ffff:8.8.8.8',
    '64:ff9b::808:808',
    '2002:808:808::1',
  ])('allows the public address %s', (address) => {
    expect(isPublic(address)).toBe(true);
  });

  it.each([
    '0.0.0.0',
    '0.1.2.3',
    '127.0.0.1',
    '127.255.255.254',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.0.1',
    '169.254.169.254',
    '100.64.0.1',
    '100.127.255.255',
    '192.0.0.8',
    '192.0.2.1',
    '198.18.0.1',
    '198.51.100.1',
    '203.0.113.1',
    '224.0.0.1',
    '239.255.255.250',
    '240.0.0.1',
    '255.255.255.255',
    '::',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '::127.0.0.1',
    '64:ff9b::7f00:1',
    '64:ff9b::10.0.0.1',
    '64:ff9b:1::1',
    '2002:7f00:1::1',
    '2002:c0a8:101::1',
    'fc00::1',
    'fd00::1',
    'fe80::1',
    'fe80::1%eth0',
    'fec0::1',
    'ff02::1',
    'ff0e::1',
    '2001:db8::1',
    '100::1',
    'not-an-address',
  ])('refuses the non-public address %s', (address) => {
    expect(isPublic(address)).toBe(false);
  });

  it('allows listed networks in addition to public ones, and nothing else private', () => {
    const isAllowed = createAddressPolicy(['127.0.0.2/32', '10.10.0.0/16', 'fd12:3456::/32', '192.168.5.5']);
    const verdicts = [
      '127.0.0.2',
      '::ffff:127.0.0.2',
      '10.10.200.1',
      'fd12:3456::9',
      '192.168.5.5',
      '8.8.8.8',
      '127.0.0.1',
      '10.11.0.1',
      '192.168.5.6',
      'fd00::1',
    ].map((address) => [address, isAllowed(address)]);
    expect(Object.fromEntries(verdicts)).toEqual({
      '127.0.0.2': true,
      '::ffff:127.0.0.2': true,
      '10.10.200.1': true,
      'fd12:3456::9': true,
      '192.168.5.5': true,
      '8.8.8.8': true,
      '127.0.0.1': false,
      '10.11.0.1': false,
      '192.168.5.6': false,
      'fd00::1': false,
    });
  });

  it('allows everything when private networks are allowed', () => {
    const isAllowed = createAddressPolicy(true);
    expect(['127.0.0.1', '::1', '10.0.0.1', '8.8.8.8'].every(isAllowed)).toBe(true);
  });
});

describe('parseAllowPrivate', () => {
  it.each([
    [undefined, false],
    ['', false],
    ['  ', false],
    ['false', false],
    ['FALSE', false],
    ['true', true],
    [' True ', true],
    ['127.0.0.2/32', ['127.0.0.2/32']],
    ['10.0.0.0/8, 192.168.1.10 ,fd00::/8,', ['10.0.0.0/8', '192.168.1.10', 'fd00::/8']],
    ['::1/128', ['::1/128']],
  ] as const)('reads %j as %j', (raw, expected) => {
    expect(parseAllowPrivate(raw)).toEqual(expected);
  });

  it.each(['yes', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/', '/8', '10.0.0/8', 'mirror.example.edu', '10.0.0.0/8/1', '0x7f.1', '10.0.0.0/-1'])(
    'rejects the malformed entry %j, naming it',
    (raw) => {
      expect(() => parseAllowPrivate(`127.0.0.2,${raw}`)).toThrow(
        new RegExp(`AGENT_ALLOW_PRIVATE_NETWORKS.*${JSON.stringify(raw).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`),
      );
    },
  );
});
