import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { accountHelperScript } from './account-helper.js';
import { ACCOUNT_HELPER_PATH, ACCOUNT_PATTERN } from './worker-commands.js';
import { provisioningKeyLine, unmanagedLines, workerExecCommand } from './worker-setup.js';

const run = promisify(execFile);

export const SUDOERS_FILE = '/etc/sudoers.d/dispatcher';

export interface WorkerSetupOptions {
  /** The account the control plane logs in as (its key is forced to `dispatcher worker-exec`). */
  provisioningUser: string;
  /** The control plane's public key: when given, the account's authorized_keys is written too, owned by root. */
  provisioningKey: string | undefined;
  /** The forced command; by default this very program's `worker-exec`. */
  workerExecCommand: string;
  /** Print what would be written, write nothing. */
  print: boolean;
}

interface SetupFile {
  path: string;
  mode: number;
  content: string;
}

/** The sudoers rule: the provisioning account may run the root-owned helper, and nothing else, as root. */
export function sudoersRule(provisioningUser: string): string {
  return `${provisioningUser} ALL=(root) NOPASSWD: ${ACCOUNT_HELPER_PATH}\n`;
}

/**
 * `dispatcher worker-setup`, run as root on a worker: installs the account helper (0755) and the
 * sudoers rule (0440), both owned by root, and with a provisioning key the provisioning account's
 * authorized_keys (root-owned, so neither that account nor the agent's can change what the key may
 * run). With `print`, shows the files instead. Returns the exit code.
 */
export async function workerSetup(
  options: Partial<WorkerSetupOptions> = {},
  write: (text: string) => void = (text) => process.stdout.write(text),
): Promise<number> {
  const user = options.provisioningUser ?? 'dispatcher';
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user) || user === 'root' || ACCOUNT_PATTERN.test(user)) {
    write(`worker-setup: "${user.slice(0, 40)}" cannot be the provisioning account (a user name, not root, not a rental account)\n`);
    return 2;
  }
  const files: SetupFile[] = [
    { path: ACCOUNT_HELPER_PATH, mode: 0o755, content: accountHelperScript() },
    { path: SUDOERS_FILE, mode: 0o440, content: sudoersRule(user) },
  ];
  try {
    const settings: WorkerSetupOptions = {
      provisioningKey: undefined,
      print: false,
      ...options,
      provisioningUser: user,
      workerExecCommand: options.workerExecCommand ?? workerExecCommand(),
    };
    if (settings.provisioningKey !== undefined)
      files.push(await authorizedKeysFile(user, provisioningKeyLine(settings.provisioningKey, settings.workerExecCommand)));
    if (settings.print) {
      for (const file of files) write(`# ${file.path} (owner root, mode ${file.mode.toString(8).padStart(4, '0')})\n${file.content}\n`);
      return 0;
    }
    if (process.getuid?.() !== 0) throw new Error('must run as root (it writes /usr/local/sbin and /etc/sudoers.d); --print shows the files instead');
    for (const file of files) {
      await installFile(file);
      write(`wrote ${file.path}\n`);
    }
    await warnAboutExposure(settings, files[2]?.path, write);
    return 0;
  } catch (error) {
    write(`worker-setup: ${(error as Error).message}\n`);
    return 1;
  }
}

async function authorizedKeysFile(user: string, line: string): Promise<SetupFile> {
  const home = await homeOf(user);
  const directory = path.join(home, '.ssh');
  for (const part of [home, directory]) {
    const stat = await fs.lstat(part).catch(() => undefined);
    if (stat?.isSymbolicLink()) throw new Error(`${part} is a symbolic link: refusing to write through it as root`);
  }
  const file = path.join(directory, 'authorized_keys');
  const existing = await fs.readFile(file, 'utf8').catch(() => '');
  return { path: file, mode: 0o644, content: `${[...unmanagedLines(existing), line].join('\n')}\n` };
}

/** What is installed but still open to change, or closed to the agent's account, said as warnings. */
async function warnAboutExposure(settings: WorkerSetupOptions, authorizedKeys: string | undefined, write: (text: string) => void): Promise<void> {
  const user = settings.provisioningUser;
  const exposed = await changeableByNonRoot(settings.workerExecCommand.split(' ').slice(0, 2));
  if (exposed)
    write(
      `warning: ${exposed} can be changed by an account other than root; whoever can change it runs code as ${user} (which sudo still lets run only ${ACCOUNT_HELPER_PATH})\n`,
    );
  const hidden = authorizedKeys && (await hiddenFromOthers(authorizedKeys));
  if (hidden)
    write(`warning: ${hidden} is closed to other accounts, so the agent's account cannot check the key there: chmod o+x (directories) or o+r (the file)\n`);
  if (!authorizedKeys) write(`${user}'s authorized_keys was left as it is: add --provisioning-key '<the control plane's public key>' to write it\n`);
}

async function homeOf(user: string): Promise<string> {
  const entry = await run('getent', ['passwd', user]).then(
    (result) => result.stdout.trim(),
    () => '',
  );
  const home = entry.split(':')[5];
  if (!home || !path.isAbsolute(home)) throw new Error(`there is no account "${user}": create it first (see the README, "Setting up a worker")`);
  return home;
}

/** Writes beside the target and renames, so a reader never sees half a file; sudoers is checked by visudo first. */
async function installFile(file: SetupFile): Promise<void> {
  const directory = path.dirname(file.path);
  await fs.mkdir(directory, { recursive: true, mode: 0o755 });
  await fs.chown(directory, 0, 0);
  const temporary = path.join(directory, `.${path.basename(file.path)}.${process.pid}.new`);
  await fs.rm(temporary, { force: true });
  await fs.writeFile(temporary, file.content, { mode: file.mode, flag: 'wx' });
  try {
    await fs.chown(temporary, 0, 0);
    await fs.chmod(temporary, file.mode);
    if (file.path === SUDOERS_FILE) await checkSudoers(temporary);
    await fs.rename(temporary, file.path);
  } finally {
    await fs.rm(temporary, { force: true });
  }
}

async function checkSudoers(file: string): Promise<void> {
  try {
    await run('visudo', ['-c', '-q', '-f', file]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('sudo is not installed (visudo is missing): install it first', { cause: error });
    throw new Error(`visudo refused the rule: ${((error as { stderr?: string }).stderr ?? '').trim()}`, { cause: error });
  }
}

/** The first of these files, or of the directories above them, that an account other than root may change. */
async function changeableByNonRoot(files: string[]): Promise<string | undefined> {
  for (const file of files) {
    for (let current = path.resolve(file); ; current = path.dirname(current)) {
      const stat = await fs.stat(current).catch(() => undefined);
      if (stat && (stat.uid !== 0 || (stat.mode & 0o022) !== 0)) return current;
      if (current === path.dirname(current)) break;
    }
  }
  return undefined;
}

/** The first directory above the file that others cannot enter, or the file when they cannot read it. */
async function hiddenFromOthers(file: string): Promise<string | undefined> {
  for (let current = path.dirname(file); current !== path.dirname(current); current = path.dirname(current)) {
    if (((await fs.stat(current)).mode & 0o001) === 0) return current;
  }
  return ((await fs.stat(file)).mode & 0o004) === 0 ? file : undefined;
}
