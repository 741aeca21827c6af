import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { SuiteContext } from './http-suites.js';
import type { DatabaseKind } from './options.js';
import { describeShape, writeShape, type Shape } from './proofs-content.js';
import { benchAuditLoad, type AuditLoadRun } from './proofs-load.js';
import { benchSpotChecks, type SpotCheckRun } from './proofs-spot.js';
import { startFileServer } from './server.js';

/** The spot-checked assets' source: one file the file server serves with Range. */
const SOURCE_BYTES = 64 * 1024 * 1024;
/** The counted copies' contents, copy i of shape i mod 3: 62, 6,104 and 61,036 blocks (Merkle paths of 6, 13 and 16 hashes). */
export const SHAPE_SIZES = [1_000_000, 100_000_000, 1_000_000_000];

export interface ProofsRun {
  database: DatabaseKind;
  spotChecks: SpotCheckRun;
  auditLoad: AuditLoadRun;
}

/**
 * The proofs suite: on each database, what spot checks cost `/complete` (VERIFY_SPOT_CHECKS=0
 * against =3, alternated rounds), what preparing and answering them costs, and the audit load of
 * `--copies` counted copies end to end. See bench/README.md, "The proofs suite".
 */
export async function benchProofs(context: SuiteContext): Promise<ProofsRun[]> {
  const { options, log } = context;
  log('\n== proofs ==');
  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'dispatcher-bench-proofs-'));
  context.onCleanup('remove proofs scratch directory', () => fs.rm(scratch, { recursive: true, force: true }));
  const described = performance.now();
  const source = describeShape(SHAPE_SIZES.length, SOURCE_BYTES);
  const file = path.join(scratch, 'source.bin');
  await writeShape(file, source);
  const shapes: Shape[] = SHAPE_SIZES.map((size, index) => describeShape(index, size));
  log(`  content: the source (${SOURCE_BYTES} bytes) and ${shapes.length} copy shapes hashed in ${((performance.now() - described) / 1000).toFixed(1)} s`);
  const files = await startFileServer(context.projectRoot, file, path.join(context.outDirectory, 'file-server-proofs.log'));
  context.onCleanup('stop proofs file server', () => files.stop());
  log(`  file server: pid ${files.pid} at ${files.url}/file`);
  const runs: ProofsRun[] = [];
  for (const kind of options.databases) {
    log(`\n  -- ${kind}: spot checks --`);
    const spotChecks = await benchSpotChecks(context, kind, source, files);
    log(`\n  -- ${kind}: audit load of ${options.copies.toLocaleString('en-US')} copies --`);
    const auditLoad = await benchAuditLoad(context, kind, shapes);
    runs.push({ database: kind, spotChecks, auditLoad });
  }
  await files.stop();
  return runs;
}
