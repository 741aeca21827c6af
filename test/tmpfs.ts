import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * A small tmpfs of the test's own: a filesystem that really fills up (ENOSPC) and that can really be
 * read-only (EROFS), which no directory on the shared disk can be for a test that runs as root
 * (root writes through any permission bits). Mounting needs root (CAP_SYS_ADMIN): CI runs as root
 * and sets DISPATCHER_TEST_TMPFS=required, so there a failing mount fails the run instead of skipping.
 */
export interface Tmpfs {
  directory: string;
  /** Remounts it read-only or read-write. Linux refuses read-only while a file on it is open for writing. */
  remount(mode: 'ro' | 'rw'): void;
  /** Unmounts it and removes the mount point. Never throws. */
  unmount(): void;
}

function probe(): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs mounts need Linux';
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-tmpfs-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', directory], { stdio: 'pipe' });
    execFileSync('umount', [directory], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return `mount -t tmpfs failed: ${String((error as { stderr?: Buffer }).stderr ?? (error as Error).message).trim()}`;
  } finally {
    fs.rmSync(directory, { recursive: true, force: true });
  }
}

/** Why a tmpfs cannot be mounted here, or undefined when it can. */
export const tmpfsUnavailable = probe();
if (tmpfsUnavailable) {
  if (process.env.DISPATCHER_TEST_TMPFS === 'required') {
    throw new Error(`A tmpfs is required (DISPATCHER_TEST_TMPFS=required) but ${tmpfsUnavailable}.`);
  }
  console.warn(`\n*** ${tmpfsUnavailable}: the full-disk test is SKIPPED (and, as root, the read-only one). ***\n`);
}

export function mountTmpfs(sizeBytes: number): Tmpfs {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'tmpfs', directory], { stdio: 'pipe' });
  return {
    directory,
    remount(mode) {
      execFileSync('mount', ['-o', `remount,${mode}`, directory], { stdio: 'pipe' });
    },
    unmount() {
      try {
        execFileSync('umount', [directory], { stdio: 'pipe' });
      } catch {
        // Still busy (a process not yet reaped): detach it now, the kernel frees it when unused.
        try {
          execFileSync('umount', ['-l', directory], { stdio: 'pipe' });
        } catch {
          // Not mounted any more.
        }
      }
      fs.rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** Writes zeroes into `directory` until the filesystem refuses with ENOSPC; returns the file to delete to free it. */
export function fillUp(directory: string): string {
  const file = path.join(directory, 'filler');
  const chunk = Buffer.alloc(64 * 1024);
  const fd = fs.openSync(file, 'w');
  try {
    for (let size = chunk.length; size >= 512;) {
      try {
        fs.writeSync(fd, chunk, 0, size);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        size /= 2; // the last free blocks, in smaller writes
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}
