import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encrypt } from 'unixcrypt';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../test/cli-runner.js';
import { formatWorkerCommand, parseWorkerCommand, type WorkerAccounts } from './worker-commands.js';
import { generateKeyPair } from './ssh.js';
import { workerExec } from './worker-exec.js';
import { authorizeProvisioningKey, readHostKey, workerExecCommand } from './worker-setup.js';

const hash = encrypt('a-password-for-tests');

describe('worker commands', () => {
  it('accepts only the two commands, with generated account names and SHA-512 crypt hashes', () => {
    expect(parseWorkerCommand(`provision rent_ab12cd34 ${hash}`)).toEqual({ verb: 'provision', account: 'rent_ab12cd34', passwordHash: hash });
    expect(parseWorkerCommand('deprovision rent_ab12cd34')).toEqual({ verb: 'deprovision', account: 'rent_ab12cd34' });
    expect(formatWorkerCommand({ verb: 'deprovision', account: 'rent_ab12cd34' })).toBe('deprovision rent_ab12cd34');
  });

  it.each([
    `provision root ${hash}`,
    `provision dispatcher ${hash}`,
    'deprovision root',
    'deprovision rent_ab12cd34; reboot',
    'deprovision rent_ab12cd34 && rm -rf /',
    'deprovision rent_ab12cd34\nreboot',
    'deprovision $(reboot)',
    'deprovision ../../etc',
    'provision rent_ab12cd34 plain-text-password',
    `provision rent_ab12cd34 ${hash};reboot`,
    `provision rent_ab12cd34 ${hash} extra`,
    'useradd -o -u 0 evil',
    '',
    'x'.repeat(600),
  ])('refuses %j', (line) => {
    expect(() => parseWorkerCommand(line)).toThrow();
  });

  it('refuses to build a command from unsafe parts', () => {
    expect(() => formatWorkerCommand({ verb: 'deprovision', account: 'root' })).toThrow(/account/);
    expect(() => formatWorkerCommand({ verb: 'provision', account: 'rent_ab12cd34', passwordHash: 'secret' })).toThrow(/hash/);
  });

  it('worker-exec applies a valid command and refuses anything else, with an exit code', async () => {
    const applied: string[] = [];
    const accounts: WorkerAccounts = {
      provision: async (account) => void applied.push(`+${account}`),
      deprovision: async (account) => void applied.push(`-${account}`),
    };
    const messages: string[] = [];
    const write = (text: string) => void messages.push(text);
    expect(await workerExec(`provision rent_ab12cd34 ${hash}`, accounts, write)).toBe(0);
    expect(await workerExec('deprovision rent_ab12cd34', accounts, write)).toBe(0);
    expect(await workerExec('deprovision root', accounts, write)).toBe(1);
    expect(await workerExec(undefined, accounts, write)).toBe(2);
    expect(applied).toEqual(['+rent_ab12cd34', '-rent_ab12cd34']);
    expect(messages.join('')).toMatch(/refused account name "root"[\s\S]*no command/);
  });

  it('`dispatcher worker-exec` refuses a command that is not a worker command, without touching accounts', async () => {
    const run = await runCli(['worker-exec'], { SSH_ORIGINAL_COMMAND: 'deprovision root' });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/worker-exec: refused account name/);
  });
});

describe('worker setup by the agent', () => {
  it('authorizes the provisioning key restricted to worker-exec, replacing its earlier line and keeping the others', async () => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'worker-'));
    const file = path.join(directory, '.ssh', 'authorized_keys');
    const first = generateKeyPair('test').public;
    const second = generateKeyPair('test').public;
    await fs.mkdir(path.dirname(file));
    await fs.writeFile(file, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnerKeyOwnerKeyOwnerKeyOwnerKeyOwnerKey owner@laptop\n');
    const command = workerExecCommand('/usr/bin/node', '/opt/dispatcher/dist/cli.js');
    await authorizeProvisioningKey(file, first, command);
    await authorizeProvisioningKey(file, `${second} dispatcher-provisioning`, command);
    const lines = (await fs.readFile(file, 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/owner@laptop$/);
    expect(lines[1]).toBe(
      `restrict,command="/usr/bin/node /opt/dispatcher/dist/cli.js worker-exec" ${second.split(' ').slice(0, 2).join(' ')} dispatcher-provisioning`,
    );
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    await expect(authorizeProvisioningKey(file, 'ssh-ed25519 "; rm -rf /', command)).rejects.toThrow(/malformed/);
    expect(() => workerExecCommand('/usr/bin/node', '/opt/my "quoted" dir/cli.js')).toThrow(/unusual characters/);
  });

  it('leaves a file that already authorizes the key as it is (the root-owned one worker-setup writes)', async () => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'worker-'));
    const file = path.join(directory, 'authorized_keys');
    const key = generateKeyPair('test').public;
    const command = workerExecCommand('/usr/bin/node', '/opt/dispatcher/dist/cli.js');
    await authorizeProvisioningKey(file, key, command);
    const before = await fs.stat(file);
    await authorizeProvisioningKey(file, `${key} dispatcher-provisioning`, command);
    expect((await fs.stat(file)).ino).toBe(before.ino);
  });

  it('reads the host key the worker reports', async () => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'worker-'));
    const pair = generateKeyPair('root@worker');
    await fs.writeFile(path.join(directory, 'host.pub'), `${pair.public}\n`);
    await fs.writeFile(path.join(directory, 'junk'), 'not a key');
    expect(await readHostKey(path.join(directory, 'host.pub'))).toBe(pair.public.split(' ').slice(0, 2).join(' '));
    await expect(readHostKey(path.join(directory, 'junk'))).rejects.toThrow(/does not hold an SSH public key/);
  });
});
