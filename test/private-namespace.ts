import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

/**
 * A private mount and PID namespace in which a test may really create and remove accounts as root:
 * /etc is a tmpfs copy of the real one (the account files are replaced by rename, which a file bind
 * mount would refuse), and every other place the account tools, sudo and the helper write to is an
 * empty tmpfs of the namespace's own. Nothing done inside reaches the machine: each command first
 * checks it runs in the namespace (its own mount namespace, and a marker only its /etc holds).
 * Needs root, unshare, nsenter and sudo: CI runs as root and sets DISPATCHER_TEST_TMPFS=required,
 * so there a missing piece fails the run instead of skipping.
 */
export interface PrivateNamespace {
  /** Runs a command inside, as root (or as `user`, through setpriv, without a login session). */
  run(command: string[], options?: { user?: string; env?: Record<string, string>; input?: string }): Run;
  /** Starts a command inside and leaves it running (killed with the namespace). */
  start(command: string[], options?: { user?: string }): ChildProcess;
  /** Reads a file as the namespace sees it. */
  read(file: string): string;
  /** Kills every process inside; the namespace and its tmpfs go with the last one. Never throws. */
  stop(): void;
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The mount points the namespace covers with a fresh tmpfs, after /etc. */
export const PRIVATE_DIRECTORIES = [
  '/etc/sudoers.d',
  '/usr/local/sbin',
  '/home',
  '/tmp',
  '/var/tmp',
  '/dev/shm',
  '/var/lib',
  '/var/log',
  '/var/mail',
  '/var/spool',
];

const MARKER = '/etc/dispatcher-test-namespace';

// Runs as the namespace's PID 1: set -e, so a mount that fails ends it before READY is printed.
// $1 is the repository, bound back in when it lies under a directory the namespace covers (a
// clone in /tmp): the commands inside run its code.
const SETUP = `set -eu
mount -t tmpfs -o mode=0755,size=64m dispatcher-test /run
mkdir /run/repository
mount --bind "$1" /run/repository
mkdir /run/etc
cp -a /etc/. /run/etc/
: > /run/etc${MARKER.slice('/etc'.length)}
mount --bind /run/etc /etc
for directory in ${PRIVATE_DIRECTORIES.join(' ')}; do
  mount -t tmpfs -o mode=0755,size=128m dispatcher-test "$directory"
done
chmod 1777 /tmp /var/tmp /dev/shm
if [ ! -e "$1/package.json" ]; then mkdir -p "$1"; mount --bind /run/repository "$1"; fi
test -e "$1/package.json"
for directory in /etc /run ${PRIVATE_DIRECTORIES.join(' ')}; do mountpoint -q "$directory"; done
test -e ${MARKER}
echo READY
exec sleep infinity
`;

/** Why no private namespace can be made here, or undefined when it can. */
export function namespaceUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'private namespaces need Linux';
  if (process.getuid?.() !== 0) return 'a private mount namespace needs root';
  for (const program of ['unshare', 'nsenter', 'sudo', 'setpriv', 'useradd']) {
    if (spawnSync('sh', ['-c', `command -v ${program}`]).status !== 0)
      return `${program} is not installed${program === 'sudo' ? ' (apt-get install -y sudo)' : ''}`;
  }
  // A container may refuse new namespaces or mounts even to root; this mount dies with its namespace.
  const probe = spawnSync(
    'unshare',
    ['--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc', 'mount', '-t', 'tmpfs', 'dispatcher-probe', '/run'],
    { encoding: 'utf8' },
  );
  if (probe.status !== 0) return `unshare cannot make a private mount namespace here: ${(probe.stderr || String(probe.error)).trim()}`;
  return undefined;
}

export async function startPrivateNamespace(): Promise<PrivateNamespace> {
  const hostNamespace = fs.readlinkSync('/proc/self/ns/mnt');
  const holder = spawn('unshare', ['--mount', '--propagation', 'private', '--pid', '--kill-child', '--mount-proc', 'sh', '-c', SETUP, 'setup', process.cwd()], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  holder.stdout.on('data', (chunk) => (output += chunk));
  holder.stderr.on('data', (chunk) => (output += chunk));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the namespace was not ready in time: ${output}`)), 30_000);
    holder.stdout.on('data', () => {
      if (output.includes('READY\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    holder.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the namespace's setup failed (${code}): ${output}`));
    });
  });
  // unshare forks the namespace's PID 1: that child is whom nsenter joins.
  const init = Number(fs.readFileSync(`/proc/${holder.pid}/task/${holder.pid}/children`, 'utf8').trim().split(' ')[0]);
  const privateNamespace = fs.readlinkSync(`/proc/${init}/ns/mnt`);
  if (!init || privateNamespace === hostNamespace) throw new Error('the namespace is not private');

  const command = (argv: string[], user: string | undefined): string[] => {
    // The namespace's PID 1 may have died and its number been reused: check before every command.
    if (fs.readlinkSync(`/proc/${init}/ns/mnt`) !== privateNamespace) throw new Error('the private namespace is gone');
    const as = user ? ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--init-groups', '--reset-env', '--'] : [];
    const guard = `test -e ${MARKER} || { echo 'not inside the test namespace' >&2; exit 97; }; exec "$@"`;
    return ['--target', String(init), '--mount', '--pid', `--wd=${process.cwd()}`, '--', 'sh', '-c', guard, 'guard', ...as, ...argv];
  };
  const environment = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C' };
  return {
    run(argv, options = {}) {
      const result = spawnSync('nsenter', command(argv, options.user), {
        env: { ...environment, ...options.env },
        input: options.input ?? '',
        encoding: 'utf8',
        timeout: 120_000,
      });
      return { code: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? String(result.error ?? '') };
    },
    start(argv, options = {}) {
      return spawn('nsenter', command(argv, options.user), { env: environment, stdio: 'ignore' });
    },
    read(file) {
      const result = spawnSync('nsenter', command(['cat', file], undefined), { encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`cannot read ${file} in the namespace: ${result.stderr}`);
      return result.stdout;
    },
    stop() {
      try {
        process.kill(init, 'SIGKILL');
      } catch {
        // Already gone.
      }
      holder.kill('SIGKILL');
    },
  };
}
