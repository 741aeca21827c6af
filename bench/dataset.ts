import { performance } from 'node:perf_hooks';
import type { AssetInput } from '../src/assets/assets.schemas.js';
import { importAssets } from '../src/assets/assets.service.js';
import type { Db } from '../src/db/database.js';

/** Share of assets whose size the catalogue does not know (size_mb null). */
const UNKNOWN_SIZE_SHARE = 0.02;

/** mulberry32: a tiny seeded PRNG, so every run imports the same catalogue. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Assets `from`..`to - 1` in the seeds' format, e.g. `asset-000001`. */
export function generateAssets(from: number, to: number, total: number, random: () => number): AssetInput[] {
  const width = Math.max(6, String(total).length);
  const assets: AssetInput[] = [];
  for (let n = from; n < to; n += 1) {
    const id = `asset-${String(n + 1).padStart(width, '0')}`;
    const sizeMb = random() < UNKNOWN_SIZE_SHARE ? null : Math.round((1 + random() * 1999) * 10) / 10;
    assets.push({
      id,
      url: `https://data.example.org/res/${id}.nc`,
      name: `Ocean temperature grid ${n + 1}`,
      size_mb: sizeMb,
      priority: 1 + Math.floor(random() * 10),
    });
  }
  return assets;
}

export interface ImportResult {
  assets: number;
  batches: number;
  /** Time spent inside importAssets only (generating the inputs is not counted). */
  seconds: number;
  assetsPerSecond: number;
  /** Peak RSS of the bench process while importing: what the batch size costs in memory. */
  peakRssMb: number;
}

/**
 * Loads `total` assets through the project's real import path. `batch` assets go to each
 * importAssets call (one transaction each); 0 sends them all in a single call.
 */
export async function importCatalogue(db: Db, total: number, batch: number, log: (line: string) => void): Promise<ImportResult> {
  const size = batch === 0 ? total : batch;
  const random = seededRandom(42);
  let seconds = 0;
  let batches = 0;
  let peakRss = process.memoryUsage().rss;
  for (let from = 0; from < total; from += size) {
    const to = Math.min(total, from + size);
    const inputs = generateAssets(from, to, total, random);
    const started = performance.now();
    await importAssets(db, inputs, { replicasFor: () => 1, actor: 'bench', source: `bench:${from}-${to}` }, Date.now());
    seconds += (performance.now() - started) / 1000;
    batches += 1;
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    if (batches % 5 === 0 || to === total)
      log(`  imported ${to.toLocaleString('en-US')} / ${total.toLocaleString('en-US')} (${Math.round(to / seconds).toLocaleString('en-US')} assets/s)`);
  }
  return { assets: total, batches, seconds, assetsPerSecond: total / seconds, peakRssMb: peakRss / 1024 / 1024 };
}
