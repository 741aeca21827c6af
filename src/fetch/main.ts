// The composition root of `dispatcher fetch`. Like the agent it loads nothing of the server (no
// database driver, no Fastify): getting data back needs no C++ toolchain.
import { DEFAULT_POLICY } from './asset-download.js';
import { exportBag } from './bag-export.js';
import { FetchStopped, fetchAssets, type FetchRunDeps } from './fetch-assets.js';
import { loadFetchConfig, type FetchFlags } from './fetch.config.js';
import { createFetchDisplay } from './fetch-progress.js';
import { ControlPlaneUnreachable, createRestoreClient } from './restore-client.js';

/** Exit status of an interrupted run (128 + SIGINT), which the same command resumes. */
const INTERRUPTED = 130;

/**
 * `dispatcher fetch`: exits 0 when every asset asked for (every asset with a verified copy, for a
 * bag) is on disk and verified, 1 when any is not, 130 when interrupted (run it again to resume).
 */
export async function fetchCommand(ids: string[], flags: FetchFlags): Promise<void> {
  let config;
  try {
    config = loadFetchConfig(ids, flags, process.env);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  const controller = new AbortController();
  const stop = () => {
    controller.abort(new Error('interrupted'));
    process.once('SIGINT', () => process.exit(INTERRUPTED));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const display = createFetchDisplay(process.stderr);
  const deps: FetchRunDeps = { display, report: (line) => process.stdout.write(`${line}\n`), signal: controller.signal, policy: DEFAULT_POLICY };
  const client = createRestoreClient(config.apiEndpoint, config.token);
  try {
    const { mode } = config;
    const ok = mode.kind === 'bag' ? await exportBag(client, mode.dir, mode.selection, deps, Date.now()) : await fetchAssets(client, mode.ids, mode.out, deps);
    process.exitCode = ok ? 0 : 1;
  } catch (error) {
    display.clear();
    if (controller.signal.aborted) {
      process.stderr.write('dispatcher fetch: interrupted; run the same command again to resume (partial files are kept)\n');
      process.exitCode = INTERRUPTED;
    } else if (error instanceof FetchStopped || error instanceof ControlPlaneUnreachable) {
      process.stderr.write(`dispatcher fetch: ${error.message}\n`);
      process.exitCode = 1;
    } else throw error;
  } finally {
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
  }
}
