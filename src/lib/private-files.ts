import fs from 'node:fs';

/** Permission bits that let the owner's group or anyone else read, write or enter. */
const SHARED_BITS = 0o077;

/**
 * Refuses a secret file that its group or others may read, as OpenSSH and PostgreSQL refuse
 * world-readable keys: a secret is readable by the service's account alone. `variable` names the
 * setting in the message.
 */
export function readPrivateFile(file: string, variable: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    throw new Error(`${variable} ${file} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  if ((stat.mode & SHARED_BITS) !== 0) {
    throw new Error(
      `${variable} ${file} may be read by other accounts (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}): make it readable by this service alone (chmod 600 ${file}).`,
    );
  }
  return fs.readFileSync(file, 'utf8');
}

/**
 * Narrows existing files and directories to their owner (0600 files, 0700 directories) where
 * their group or others may use them; a path that cannot be narrowed (another owner) stops
 * start-up with a message saying what to do. Missing paths are left alone.
 */
export function keepPrivate(paths: { path: string; directory: boolean }[], what: string): void {
  for (const { path, directory } of paths) {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(path);
    } catch {
      continue;
    }
    if ((stat.mode & SHARED_BITS) === 0) continue;
    // A sticky directory (/tmp) is everyone's by design: narrowing it would break the machine.
    if (directory && (stat.mode & 0o1000) !== 0)
      throw new Error(`${path} is a shared directory (sticky bit, like /tmp): ${what} Give it a directory of its own.`);
    const wanted = directory ? 0o700 : 0o600;
    try {
      fs.chmodSync(path, (stat.mode & 0o700) | (wanted & 0o700));
    } catch (error) {
      throw new Error(
        `${path} may be read by other accounts (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}) and cannot be narrowed (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): ${what} Run "chmod ${wanted.toString(8)} ${path}" as its owner.`,
        { cause: error },
      );
    }
  }
}
