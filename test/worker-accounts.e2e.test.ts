import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { encrypt } from 'unixcrypt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACCOUNT_STATE_DIRECTORY, RENTAL_ID_RANGE } from '../src/workers/account-helper.js';
import { ACCOUNT_HELPER_PATH } from '../src/workers/worker-commands.js';
import { SUDOERS_FILE } from '../src/workers/worker-install.js';
import { generateKeyPair } from '../src/workers/ssh.js';
import { root } from './cli-runner.js';
import { namespaceUnavailable, startPrivateNamespace, type PrivateNamespace } from './private-namespace.js';

// Everything here creates and removes real accounts, as root, with the real helper and sudo, but
// inside a private mount namespace (test/private-namespace.ts); the last test checks the machine's
// own files are as they were.
const unavailable = namespaceUnavailable();
if (unavailable) {
  if (process.env.DISPATCHER_TEST_TMPFS === 'required') throw new Error(`A private namespace is required (DISPATCHER_TEST_TMPFS=required) but ${unavailable}.`);
  console.warn(`\n*** ${unavailable}: the worker account tests in a private namespace are SKIPPED. ***\n`);
}

const HOST_FILES = [
  '/etc/passwd',
  '/etc/shadow',
  '/etc/group',
  '/etc/gshadow',
  '/etc/subuid',
  '/etc/subgid',
  ACCOUNT_HELPER_PATH,
  SUDOERS_FILE,
  path.join(ACCOUNT_STATE_DIRECTORY, 'next-uid'),
];
const hash = encrypt('a-password-for-tests');
const otherHash = encrypt('another-password');
const controlPlaneKey = generateKeyPair('dispatcher-provisioning').public;
const FORCED = 'node /opt/dispatcher/dist/cli.js worker-exec';
const AUTHORIZED_KEYS = '/home/dispatcher/.ssh/authorized_keys';

function snapshotHost(): Record<string, string> {
  const entries = HOST_FILES.map((file) => [file, fs.existsSync(file) ? crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex') : 'absent']);
  return { ...Object.fromEntries(entries), '/home': fs.readdirSync('/home').sort().join(' ') };
}

describe.skipIf(unavailable !== undefined)('rental accounts on a worker, in a private namespace', () => {
  const host = snapshotHost();
  let ns: PrivateNamespace;
  let removedUid: number | undefined;
  const asProvisioner = (args: string[]) => ns.run(args, { user: 'dispatcher' });
  const entry = (args: string[], user?: string) =>
    ns.run([process.execPath, '--import', 'tsx', path.join(root, 'test/worker-entry.ts'), ...args], user ? { user } : {});
  const workerExec = (line: string) =>
    asProvisioner(['env', `SSH_ORIGINAL_COMMAND=${line}`, process.execPath, '--import', 'tsx', path.join(root, 'src/cli.ts'), 'worker-exec']);
  const accountFiles = () => ['/etc/passwd', '/etc/shadow', '/etc/group', '/etc/gshadow'].map((file) => ns.read(file)).join('\n');
  const uidOf = (account: string) => {
    const entry = ns.run(['getent', 'passwd', account]);
    return entry.code === 0 ? Number(entry.stdout.split(':')[2]) : undefined;
  };

  beforeAll(async () => {
    ns = await startPrivateNamespace();
    // The README's two accounts: one the control plane logs in as, one the agent runs as.
    expect(ns.run(['useradd', '--system', '--create-home', '--shell', '/bin/sh', 'dispatcher'])).toMatchObject({ code: 0 });
    expect(ns.run(['useradd', '--system', '--create-home', '--shell', '/usr/sbin/nologin', 'dispatcher-agent'])).toMatchObject({ code: 0 });
    const setup = entry(['setup', JSON.stringify({ workerExecCommand: FORCED, provisioningKey: controlPlaneKey })]);
    expect(setup.stderr + setup.stdout).toMatch(new RegExp(`wrote ${ACCOUNT_HELPER_PATH}\\nwrote ${SUDOERS_FILE}\\nwrote ${AUTHORIZED_KEYS}\\n`));
    expect(setup.code).toBe(0);
  });
  afterAll(() => ns?.stop());

  it('installs the helper and the sudoers rule owned by root, and sudo lets the provisioning account run only the helper', () => {
    expect(ns.run(['stat', '-c', '%U:%G %a', ACCOUNT_HELPER_PATH, SUDOERS_FILE]).stdout).toBe('root:root 755\nroot:root 440\n');
    expect(ns.read(SUDOERS_FILE)).toBe(`dispatcher ALL=(root) NOPASSWD: ${ACCOUNT_HELPER_PATH}\n`);
    expect(asProvisioner(['sudo', '-n', '-l']).stdout).toMatch(new RegExp(`\\(root\\) NOPASSWD: ${ACCOUNT_HELPER_PATH}\\s*$`));
    const before = accountFiles();
    for (const command of [
      ['/usr/sbin/useradd', '-o', '-u', '0', 'evil'],
      ['/usr/sbin/usermod', '-p', 'x', 'root'],
      ['/usr/sbin/userdel', 'dispatcher'],
      ['/bin/sh', '-c', 'id'],
    ]) {
      const refused = asProvisioner(['sudo', '-n', ...command]);
      expect(refused.code, command.join(' ')).toBe(1);
      expect(refused.stderr).toMatch(/a password is required/);
    }
    expect(accountFiles()).toBe(before);
  });

  it("writes the provisioning key root-owned: the agent's account finds it there and cannot change it, nor use sudo", () => {
    const key = controlPlaneKey.split(' ').slice(0, 2).join(' ');
    expect(ns.read(AUTHORIZED_KEYS)).toBe(`restrict,command="${FORCED}" ${key} dispatcher-provisioning\n`);
    expect(ns.run(['stat', '-c', '%U %a', AUTHORIZED_KEYS, path.dirname(AUTHORIZED_KEYS)]).stdout).toBe('root 644\nroot 755\n');
    // At registration the agent (its own account, its own path to the program) finds the key authorized.
    expect(entry(['authorize', AUTHORIZED_KEYS, controlPlaneKey, 'node /home/dispatcher-agent/cli.js worker-exec'], 'dispatcher-agent')).toMatchObject({
      code: 0,
    });
    const otherKey = generateKeyPair('other').public;
    const refused = entry(['authorize', AUTHORIZED_KEYS, otherKey, FORCED], 'dispatcher-agent');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`dispatcher worker-setup --provisioning-key '${otherKey.split(' ').slice(0, 2).join(' ')}'`);
    expect(ns.run(['sh', '-c', `echo 'ssh-ed25519 AAAA agent' >> ${AUTHORIZED_KEYS}`], { user: 'dispatcher-agent' }).code).not.toBe(0);
    expect(ns.read(AUTHORIZED_KEYS)).toBe(`restrict,command="${FORCED}" ${key} dispatcher-provisioning\n`);
    const agentSudo = ns.run(['sudo', '-n', ACCOUNT_HELPER_PATH, 'provision', 'rent_ab12cd34', hash], { user: 'dispatcher-agent' });
    expect(agentSudo.stderr).toMatch(/a password is required/);
    expect(uidOf('rent_ab12cd34')).toBeUndefined();
  });

  it.each(
    [
      ['provision', 'root', hash],
      ['provision', 'rent_ab12cd34', '-o'],
      ['provision', 'rent_ab12cd34', 'plain-text-password'],
      ['provision', 'rent_ab12cd34', hash, 'extra'],
      ['provision', 'rent_ab12cd34\nroot', hash],
      ['provision', 'rent_ab12cd34 -o', hash],
      ['provision', 'rent_ab12cd34', `${hash}\nroot::0:0::/:/bin/sh`],
      ['deprovision', 'root'],
      ['deprovision', 'dispatcher'],
      ['deprovision', 'rent_ab12cd34', '-o'],
      ['-o', '-u', '0', 'x'],
      ['root'],
      ['rent_ab12cd34', '-o'],
      ['--help'],
      [],
    ].map((args) => [args]),
  )('the helper, through sudo, refuses %j and changes nothing', (args) => {
    const before = accountFiles();
    const refused = asProvisioner(['sudo', '-n', ACCOUNT_HELPER_PATH, ...args]);
    expect(refused.stderr).toMatch(/dispatcher-account: refused/);
    expect(refused.code).toBe(2);
    expect(accountFiles()).toBe(before);
    expect(ns.run(['test', '-e', ACCOUNT_STATE_DIRECTORY + '/next-uid']).code).not.toBe(0);
  });

  it('provisions through worker-exec with a high UID, then removes the renter with its processes and its files', async () => {
    expect(workerExec(`provision rent_ab12cd34 ${hash}`)).toMatchObject({ code: 0 });
    const uid = uidOf('rent_ab12cd34') as number;
    expect(uid).toBeGreaterThanOrEqual(RENTAL_ID_RANGE.first);
    expect(ns.run(['getent', 'passwd', 'rent_ab12cd34']).stdout).toBe(`rent_ab12cd34:x:${uid}:${uid}:Dispatcher rental:/home/rent_ab12cd34:/bin/bash\n`);
    expect(ns.run(['getent', 'shadow', 'rent_ab12cd34']).stdout.split(':')[1]).toBe(hash);
    expect(ns.read('/etc/subuid')).not.toMatch(/rent_/);
    expect(ns.run(['stat', '-c', '%U %a %s', `${ACCOUNT_STATE_DIRECTORY}/next-uid`]).stdout).toMatch(/^root 600 /);
    // A retry keeps the account and its UID and sets the password it is given.
    expect(workerExec(`provision rent_ab12cd34 ${otherHash}`)).toMatchObject({ code: 0 });
    expect(uidOf('rent_ab12cd34')).toBe(uid);
    expect(ns.run(['getent', 'shadow', 'rent_ab12cd34']).stdout.split(':')[1]).toBe(otherHash);

    const renter = (script: string) => ns.run(['sh', '-c', `umask 077; ${script}`], { user: 'rent_ab12cd34' });
    expect(
      renter(
        'echo secret > /tmp/leftover && mkdir -p /tmp/nest/deeper && echo x > /tmp/nest/deeper/file && echo y > /var/tmp/leftover && echo z > /dev/shm/leftover',
      ),
    ).toMatchObject({ code: 0 });
    expect(ns.run(['sh', '-c', 'echo kept > /tmp/not-the-renters'], { user: 'dispatcher' })).toMatchObject({ code: 0 });
    const running = ns.start(['sleep', '600'], { user: 'rent_ab12cd34' });
    const exited = new Promise((resolve) => running.on('exit', resolve));
    await expect.poll(() => ns.run(['pgrep', '-u', String(uid)]).code).toBe(0);

    expect(workerExec('deprovision rent_ab12cd34')).toMatchObject({ code: 0 });
    removedUid = uid;
    await exited;
    expect(ns.run(['pgrep', '-u', String(uid)]).code).toBe(1);
    expect(ns.run(['find', '/tmp', '/var/tmp', '/dev/shm', '-user', String(uid)]).stdout).toBe('');
    for (const file of ['/tmp/leftover', '/tmp/nest', '/var/tmp/leftover', '/dev/shm/leftover', '/home/rent_ab12cd34'])
      expect(ns.run(['test', '-e', file]).code, file).toBe(1);
    expect(ns.read('/tmp/not-the-renters')).toBe('kept\n');
    expect(uidOf('rent_ab12cd34')).toBeUndefined();
    expect(ns.run(['getent', 'group', 'rent_ab12cd34']).code).toBe(2);
    expect(workerExec('deprovision rent_ab12cd34')).toMatchObject({ code: 0 });
  });

  it('never gives a UID twice, and skips one taken meanwhile', () => {
    const next = Number(ns.read(`${ACCOUNT_STATE_DIRECTORY}/next-uid`));
    expect(next).toBe((removedUid as number) + 1);
    expect(ns.run(['useradd', '--uid', String(next), '--no-create-home', 'squatter'])).toMatchObject({ code: 0 });
    expect(workerExec(`provision rent_ef56gh78 ${hash}`)).toMatchObject({ code: 0 });
    expect(uidOf('rent_ef56gh78')).toBe(next + 1);
    // The same name again, after its removal: a new UID too.
    expect(workerExec(`provision rent_ab12cd34 ${hash}`)).toMatchObject({ code: 0 });
    expect(uidOf('rent_ab12cd34')).toBe(next + 2);
  });

  it("left the machine's own account files and directories as they were", () => {
    ns.stop();
    expect(snapshotHost()).toEqual(host);
  });
});
