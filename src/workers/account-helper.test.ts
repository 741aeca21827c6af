import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encrypt } from 'unixcrypt';
import { beforeAll, describe, expect, it } from 'vitest';
import { accountHelperScript, toExtendedRegex } from './account-helper.js';
import { ACCOUNT_HELPER_PATH, ACCOUNT_PATTERN, PASSWORD_HASH_PATTERN, systemAccounts, WorkerCommandError } from './worker-commands.js';
import { sudoersRule, workerSetup } from './worker-install.js';

const hash = encrypt('a-password-for-tests');

// The helper's `check` verb runs the argument checks and exits before anything else, so these run
// the very text worker-setup installs, anywhere, without touching accounts. The same checks, used
// for real through sudo, are in test/worker-accounts.e2e.test.ts (a private namespace).
let helper: string;
beforeAll(async () => {
  helper = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'dispatcher-account-')), 'dispatcher-account');
  await fs.writeFile(helper, accountHelperScript(), { mode: 0o755 });
});

function check(args: string[]): { code: number | null; stderr: string } {
  const result = spawnSync('/bin/sh', [helper, 'check', ...args], { encoding: 'utf8', env: {} });
  return { code: result.status, stderr: result.stderr };
}

describe("the account helper's argument checks", () => {
  it('accepts exactly the two commands with a rental account and a SHA-512 crypt hash', () => {
    expect(check(['provision', 'rent_ab12cd34', hash])).toEqual({ code: 0, stderr: '' });
    expect(check(['provision', 'rent_ab12cd34', encrypt('x', '$6$rounds=5000$abcdefgh')])).toMatchObject({ code: 0 });
    expect(check(['deprovision', 'rent_ab12cd34'])).toEqual({ code: 0, stderr: '' });
  });

  it.each([
    [['-o', '-u', '0', 'x']],
    [['root']],
    [['rent_ab12cd34', '-o']],
    [['--help']],
    [[]],
    [['provision', 'root', hash]],
    [['provision', 'rent_ab12cd34', '-o']],
    [['provision', 'rent_ab12cd34', hash, 'extra']],
    [['provision', '-o', '-u', '0', 'rent_ab12cd34', hash]],
    [['provision', 'rent_ab12cd34\nroot', hash]],
    [['provision', 'rent_ab12cd34 root', hash]],
    [['provision', ' rent_ab12cd34', hash]],
    [['provision', 'rent_ab12cd34', 'plain-text-password']],
    [['provision', 'rent_ab12cd34', `${hash}\nroot::0:0::/:/bin/sh`]],
    [['provision', 'rent_ab12cd34', `${hash} -o`]],
    [['provision', 'rent_ab12cd34', '$1$abcdefgh$0123456789abcdefghijkl']],
    [['provision', 'rent_ab12cd34', '']],
    [['deprovision', 'root']],
    [['deprovision', 'dispatcher']],
    [['deprovision', 'rent_ab12cd34', '-o']],
    [['deprovision', 'rent_AB12CD34']],
    [['deprovision', 'rent_ab12cd345']],
    [['deprovision', 'rent_ab12cd3']],
    [['deprovision', '../../etc/rent_ab12cd34']],
    [['deprovision', 'rent_ab12cd3\u0131']],
    [['deprovision', '']],
    [['useradd', '-o', '-u', '0', 'evil']],
  ])('refuses %j with exit code 2', (args) => {
    const result = check(args);
    expect(result.stderr).toMatch(/^dispatcher-account: refused: /);
    expect(result.code).toBe(2);
  });

  it("decides exactly as the control plane's patterns do, on random near misses", () => {
    const alphabet = ['a', 'z', '0', '9', '_', '.', '/', '$', 'A', 'Z', '-', ' ', '\n', '\t', '=', 'é', '\u0131', '*', '['];
    const mutate = (value: string) => {
      const at = crypto.randomInt(value.length + 1);
      const char = alphabet[crypto.randomInt(alphabet.length)] as string;
      const kind = crypto.randomInt(3);
      return kind === 0
        ? value.slice(0, at) + char + value.slice(at)
        : kind === 1
          ? value.slice(0, at) + value.slice(at + 1)
          : value.slice(0, at) + char + value.slice(at + 1);
    };
    const disagreements: string[] = [];
    const outcomes = new Set<number>();
    for (let round = 0; round < 300; round += 1) {
      const account = round % 3 === 0 ? `rent_${crypto.randomBytes(4).toString('hex')}` : mutate(mutate('rent_ab12cd34'));
      const candidate = round % 5 < 2 ? hash : mutate(round % 2 ? hash : hash.replace('$6$', '$6$rounds=5000$'));
      const expected = ACCOUNT_PATTERN.test(account) && PASSWORD_HASH_PATTERN.test(candidate) ? 0 : 2;
      outcomes.add(expected);
      if (check(['provision', account, candidate]).code !== expected) disagreements.push(JSON.stringify([account, candidate]));
    }
    expect(outcomes).toEqual(new Set([0, 2]));
    expect(disagreements).toEqual([]);
  });

  it('embeds only patterns that grep -E reads the same way', () => {
    expect(accountHelperScript()).toContain(`ACCOUNT_PATTERN='${ACCOUNT_PATTERN.source}'`);
    expect(accountHelperScript()).toContain(`HASH_PATTERN='${PASSWORD_HASH_PATTERN.source}'`);
    for (const pattern of [/^\d{8}$/, /^a$/i, /^(?:a)$/, /^it's$/, /rent_/, /^a\$/])
      expect(() => toExtendedRegex(pattern), String(pattern)).toThrow(/cannot be checked/);
  });

  it('is valid POSIX sh, and refuses to act for an account other than root', () => {
    expect(spawnSync('/bin/sh', ['-n', helper]).status).toBe(0);
    if (process.getuid?.() === 0) return; // as root, the real verbs are exercised in the private namespace only
    const result = spawnSync('/bin/sh', [helper, 'deprovision', 'rent_ab12cd34'], { encoding: 'utf8' });
    expect(result.stderr).toMatch(/must run as root/);
    expect(result.status).toBe(1);
  });
});

describe('worker-setup', () => {
  it('prints the helper and exactly the one sudoers rule, writing nothing', async () => {
    let printed = '';
    expect(await workerSetup({ print: true, workerExecCommand: 'node /opt/dispatcher/dist/cli.js worker-exec' }, (text) => void (printed += text))).toBe(0);
    expect(printed).toContain(`# ${ACCOUNT_HELPER_PATH} (owner root, mode 0755)\n${accountHelperScript()}`);
    expect(printed).toContain(`# /etc/sudoers.d/dispatcher (owner root, mode 0440)\ndispatcher ALL=(root) NOPASSWD: ${ACCOUNT_HELPER_PATH}\n`);
    expect(sudoersRule('provisioner')).toBe(`provisioner ALL=(root) NOPASSWD: ${ACCOUNT_HELPER_PATH}\n`);
  });

  it.each(['root', 'rent_ab12cd34', 'dispatcher ALL=(ALL) ALL', 'x\ny', ''])('refuses %j as the provisioning account', async (user) => {
    let printed = '';
    expect(await workerSetup({ print: true, provisioningUser: user }, (text) => void (printed += text))).toBe(2);
    expect(printed).toMatch(/cannot be the provisioning account/);
  });
});

describe('systemAccounts', () => {
  it('hands the validated parts to the helper as arguments and reports its refusal', async () => {
    const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'fake-helper-'));
    const fake = path.join(directory, 'helper');
    const log = path.join(directory, 'calls');
    await fs.writeFile(
      fake,
      `#!/bin/sh\nprintf '%s|' "$@" >> ${log}\necho >> ${log}\n[ "$2" != rent_refused1 ] || { echo 'dispatcher-account: refused: nope' >&2; exit 2; }\n`,
      { mode: 0o755 },
    );
    const accounts = systemAccounts({ sudo: false, helper: fake });
    await accounts.provision('rent_ab12cd34', hash);
    await accounts.deprovision('rent_ab12cd34');
    expect(await fs.readFile(log, 'utf8')).toBe(`provision|rent_ab12cd34|${hash}|\ndeprovision|rent_ab12cd34|\n`);
    const refused = accounts.deprovision('rent_refused1');
    await expect(refused).rejects.toBeInstanceOf(WorkerCommandError);
    await expect(refused).rejects.toThrow(`${fake} deprovision failed: dispatcher-account: refused: nope`);
    await expect(systemAccounts({ sudo: false, helper: path.join(directory, 'absent') }).deprovision('rent_ab12cd34')).rejects.toThrow(
      /is it installed\? run `dispatcher worker-setup` as root/,
    );
  });
});
