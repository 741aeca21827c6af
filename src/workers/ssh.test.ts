import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import { afterEach, describe, expect, it } from 'vitest';
import { canonicalHostKey, proveHostKey } from './ssh.js';

const { Server, utils } = ssh2;

/** An SSH server holding several host keys, as sshd does (RSA, ECDSA and Ed25519 by default). */
async function serverWithKeys(keys: { private: string; public: string }[]): Promise<{ port: number; close(): Promise<void> }> {
  const server = new Server({ hostKeys: keys.map((key) => key.private) }, (connection) => {
    connection.on('error', () => undefined);
    connection.on('authentication', (context) => context.reject());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('proving a host key', () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  const rsa = utils.generateKeyPairSync('rsa', { bits: 2048 });
  const ecdsa = utils.generateKeyPairSync('ecdsa', { bits: 256 });
  const ed25519 = utils.generateKeyPairSync('ed25519');

  it("proves each key of a server that holds several, asking for that key's algorithm only", async () => {
    const server = await serverWithKeys([ed25519, ecdsa, rsa]);
    closers.push(server.close);
    for (const key of [ed25519, ecdsa, rsa]) {
      const hostKey = canonicalHostKey(key.public) as string;
      expect(await proveHostKey({ host: '127.0.0.1', port: server.port, hostKey }, 5_000), hostKey.split(' ')[0]).toEqual({ ok: true });
    }
  });

  it('fails when the server holds another key of the same type, or none of that type', async () => {
    const server = await serverWithKeys([ed25519]);
    closers.push(server.close);
    const another = canonicalHostKey(utils.generateKeyPairSync('ed25519').public) as string;
    const other = await proveHostKey({ host: '127.0.0.1', port: server.port, hostKey: another }, 5_000);
    expect(other).toEqual({ ok: false, detail: `127.0.0.1:${server.port} presented another host key than the registered one` });
    const noRsa = await proveHostKey({ host: '127.0.0.1', port: server.port, hostKey: canonicalHostKey(rsa.public) as string }, 5_000);
    expect(noRsa.ok).toBe(false);
  });

  it("fails for a server that presents another machine's public host key without its private half", async () => {
    // The attacker copied the victim's public key (ssh-keyscan prints it) and signs with its own
    // key: its server presents the copied key, and its own private key signs the exchange.
    const victim = utils.generateKeyPairSync('ed25519');
    const copied = (utils.parseKey(victim.public) as ssh2.ParsedKey).getPublicSSH();
    const server = new Server({ hostKeys: [utils.generateKeyPairSync('ed25519').private] }, (connection) => {
      // ssh2 keeps a connection's host keys on its protocol object; the attacker's differs only in what it presents.
      const keys = (connection as any)._protocol._hostKeys as Record<string, ssh2.ParsedKey>;
      keys['ssh-ed25519'] = Object.create(keys['ssh-ed25519'] as object, { getPublicSSH: { value: () => copied } });
      connection.on('error', () => undefined);
      connection.on('authentication', (context) => context.reject());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const port = (server.address() as AddressInfo).port;
    const proof = await proveHostKey({ host: '127.0.0.1', port, hostKey: canonicalHostKey(victim.public) as string }, 5_000);
    expect(proof).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/presented the registered host key but did not prove it holds its private half: .*signature/i),
    });
  });

  it('fails, saying why, when nothing answers', async () => {
    const server = await serverWithKeys([ed25519]);
    await server.close();
    const proof = await proveHostKey({ host: '127.0.0.1', port: server.port, hostKey: canonicalHostKey(ed25519.public) as string }, 5_000);
    expect(proof).toMatchObject({ ok: false, detail: expect.stringMatching(/^SSH to 127\.0\.0\.1:\d+ failed: .*ECONNREFUSED/) });
  });
});
