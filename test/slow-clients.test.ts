import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from './databases.js';
import { startTestServer, type TestServer } from './server.js';

/** What a hostile client can do with sockets and the documentation page. */
describe('slow clients and the docs page', () => {
  let database: TestDatabase;
  let server: TestServer;
  beforeEach(async () => {
    database = await createTestDatabase('sqlite');
    server = await startTestServer(database, { requestTimeoutMs: 1000 });
  });
  afterEach(async () => {
    await server.stop();
    await database.drop();
  });

  it('closes a connection whose request stalls, well before the client would give up', async () => {
    const { port, hostname } = new URL(server.url);
    const socket = net.connect(Number(port), hostname);
    let answer = '';
    socket.on('data', (chunk) => (answer += chunk));
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    // Headers that never end: one byte now, nothing after.
    socket.write('POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX');
    // A server that never closes it fails the test by its timeout.
    await new Promise<void>((resolve) => socket.once('close', resolve));
    // Idle past twice REQUEST_TIMEOUT_SECONDS: dropped (Node answers 408 instead when its periodic
    // request-timeout check comes first).
    expect(answer === '' || answer.startsWith('HTTP/1.1 408')).toBe(true);
    // The server still serves everyone else.
    expect((await server.api.get('/health')).status).toBe(200);
  });

  it("serves /docs with the dashboard's protections: a content security policy, no framing, no sniffing", async () => {
    const page = await fetch(`${server.url}/docs/static/index.html`);
    expect(page.status).toBe(200);
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    const policy = page.headers.get('content-security-policy') ?? '';
    expect(policy).toContain("frame-ancestors 'none'");
    expect(policy).toContain("object-src 'none'");
    expect(policy).not.toContain('upgrade-insecure-requests');
  });
});
