import type { AddressInfo } from 'node:net';
import { Client, Server, utils, type Connection } from 'ssh2';
import { verify as verifyCrypt } from 'unixcrypt';
import { generateKeyPair } from '../src/workers/ssh.js';
import { executeWorkerCommand, type WorkerAccounts } from '../src/workers/worker-commands.js';

/**
 * A worker machine over the real SSH protocol (an in-process ssh2 server on loopback). The
 * provisioning account accepts only the control plane's key and runs Dispatcher's real worker
 * command parser against a sandboxed account table instead of /etc/passwd; rental accounts log
 * in with their password and can run `whoami`.
 */
export interface SshWorker {
  port: number;
  /** The host key line the worker's agent would report ("ssh-ed25519 AAAA…"). */
  hostKey: string;
  /** The sandboxed accounts: name → SHA-512 crypt hash. */
  accounts: Map<string, string>;
  /** Every command line the provisioning account received. */
  commands: string[];
  /** When set, provisioning commands fail with this message (exit code 1). */
  failProvisioning: string | undefined;
  /** When set, cleanup commands fail with this message. */
  failDeprovisioning: string | undefined;
  /** Stops answering (closes the port and every connection), as a crashed machine does. */
  stop(): Promise<void>;
  /** Starts again on the same port, with a new host key when asked (a reinstalled machine). */
  restart(options?: { newHostKey?: boolean }): Promise<void>;
}

export async function startSshWorker(provisioningPublicKey: string, options: { user?: string; port?: number } = {}): Promise<SshWorker> {
  const provisioningUser = options.user ?? 'dispatcher';
  const allowed = utils.parseKey(provisioningPublicKey);
  if (allowed instanceof Error) throw allowed;
  const allowedKey = Array.isArray(allowed) ? allowed[0] : allowed;
  let hostKeyPair = generateKeyPair('worker-host-key');
  let server: Server | undefined;
  const connections = new Set<Connection>();
  const sessions = new Map<string, Set<Connection>>();

  const sandbox: WorkerAccounts = {
    async provision(account, passwordHash) {
      if (worker.failProvisioning) throw new Error(worker.failProvisioning);
      worker.accounts.set(account, passwordHash);
    },
    async deprovision(account) {
      if (worker.failDeprovisioning) throw new Error(worker.failDeprovisioning);
      worker.accounts.delete(account);
      for (const connection of sessions.get(account) ?? []) connection.end();
    },
  };

  const onConnection = (connection: Connection) => {
    connections.add(connection);
    let user: string | undefined;
    connection.on('close', () => {
      connections.delete(connection);
      if (user) sessions.get(user)?.delete(connection);
    });
    connection.on('error', () => undefined);
    connection.on('authentication', (context) => {
      if (context.method === 'publickey' && context.username === provisioningUser && allowedKey) {
        const matches = context.key.algo === allowedKey.type && context.key.data.equals(allowedKey.getPublicSSH());
        if (!matches) return context.reject(['publickey', 'password']);
        if (context.signature && context.blob && allowedKey.verify(context.blob, context.signature, context.hashAlgo) !== true) return context.reject();
        user = context.username;
        return context.accept();
      }
      if (context.method === 'password') {
        const hash = worker.accounts.get(context.username);
        if (hash && verifyCrypt(context.password, hash)) {
          user = context.username;
          if (!sessions.has(user)) sessions.set(user, new Set());
          sessions.get(user)?.add(connection);
          return context.accept();
        }
      }
      return context.reject(['publickey', 'password']);
    });
    connection.on('ready', () => {
      connection.on('session', (acceptSession) => {
        const session = acceptSession();
        session.on('exec', (acceptExec, _reject, info) => {
          const stream = acceptExec();
          const finish = (code: number, text: string) => {
            if (code === 0) stream.write(text);
            else stream.stderr.write(text);
            stream.exit(code);
            stream.end();
          };
          if (user !== provisioningUser) return finish(0, `${user}\n`);
          worker.commands.push(info.command);
          executeWorkerCommand(info.command, sandbox).then(
            () => finish(0, 'ok\n'),
            (error: Error) => finish(1, `${error.message}\n`),
          );
        });
      });
    });
  };

  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server = new Server({ hostKeys: [hostKeyPair.private] }, onConnection);
      server.on('error', reject);
      server.listen(port, '127.0.0.1', () => resolve((server?.address() as AddressInfo).port));
    });

  const worker: SshWorker = {
    port: 0,
    hostKey: hostKeyPair.public,
    accounts: new Map(),
    commands: [],
    failProvisioning: undefined,
    failDeprovisioning: undefined,
    async stop() {
      for (const connection of connections) connection.end();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      server = undefined;
    },
    async restart(restartOptions = {}) {
      if (restartOptions.newHostKey) {
        hostKeyPair = generateKeyPair('worker-host-key');
        worker.hostKey = hostKeyPair.public;
      }
      await listen(worker.port);
    },
  };
  worker.port = await listen(options.port ?? 0);
  return worker;
}

/** Logs in with a password over real SSH and runs `whoami`; rejects when the login is refused. */
export function sshLogin(port: number, username: string, password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const timer = setTimeout(() => {
      client.end();
      reject(new Error('SSH login timed out'));
    }, 10_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      client.end();
      reject(error);
    };
    client.on('error', fail);
    client.on('ready', () => {
      client.exec('whoami', (error, stream) => {
        if (error) return fail(error);
        let output = '';
        stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
        stream.on('close', () => {
          clearTimeout(timer);
          client.end();
          resolve(output.trim());
        });
      });
    });
    client.connect({ host: '127.0.0.1', port, username, password, readyTimeout: 10_000, tryKeyboard: false });
  });
}
