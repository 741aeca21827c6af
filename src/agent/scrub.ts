import fsp from 'node:fs/promises';
import path from 'node:path';
import { pause } from '../lib/backoff.js';
import type { AllocationRecord, LostCopy } from './client.js';
import { checkCopy, dropCopy, sendCopyReport, type CopyDeps } from './copy-check.js';
import type { ReadPace } from './files.js';
import { createRateLimiter } from './rate-limiter.js';
import type { CopyRecord, Store } from './storage.js';

export interface ScrubSettings {
  /** Bytes per second the scrub reads at most; 0: no scrub. */
  bytesPerSecond: number;
  /** From the end of one full pass to the start of the next. */
  intervalMs: number;
}

/**
 * The copies the control plane counts for this node (its completed allocations) judged against the
 * store without reading them: present with the size recorded is checked; anything else (gone, the
 * wrong size, another version, not in the manifest at all as after DATA_DIRECTORY was wiped) is lost as
 * missing. A bad kept copy is forgotten on the way; an unreadable one is only logged.
 */
export async function assessCopiesAtStart(
  store: Store,
  completed: Pick<AllocationRecord, 'asset_id' | 'sha256' | 'bytes'>[],
  log: (message: string) => void,
): Promise<{ checked: string[]; lost: LostCopy[] }> {
  const checked = new Set<string>();
  const lost = new Map<string, LostCopy>();
  for (const allocation of completed) {
    const counted = allocation.sha256 !== null && allocation.bytes !== null ? { sha256: allocation.sha256, bytes: allocation.bytes } : undefined;
    const check = await checkCopy(store, allocation.asset_id, counted, 'never');
    if (check.ok) {
      checked.add(allocation.asset_id);
      continue;
    }
    if (check.bad) await dropCopy(store, check.bad);
    if (check.reason === 'unreadable') log(`${allocation.asset_id}: ${check.detail}; not reported`);
    else lost.set(allocation.asset_id, { asset_id: allocation.asset_id, reason: 'missing', detail: check.detail });
  }
  return { checked: [...checked], lost: [...lost.values()] };
}

/**
 * At start, reports what `assessCopiesAtStart` finds; then, unless the scrub is off, re-hashes every
 * kept copy in turn at the scrub's rate, one full pass per interval, until `deps.signal` aborts.
 */
export async function checkCopies(
  deps: CopyDeps,
  listCompleted: () => Promise<AllocationRecord[]>,
  dataDirectory: string,
  settings: ScrubSettings,
): Promise<void> {
  const { progress, signal } = deps;
  try {
    const found = await assessCopiesAtStart(deps.store, await listCompleted(), (message) => progress.log(message));
    progress.log(`copies at start: ${found.checked.length} present, ${found.lost.length} missing${found.lost.length > 0 ? ' (reported lost)' : ''}`);
    await sendCopyReport(deps, found.checked, found.lost);
  } catch (error) {
    if (signal.aborted) return;
    progress.log(`checking copies at start failed: ${(error as Error).message}`);
  }
  if (settings.bytesPerSecond > 0) await scrub(deps, dataDirectory, settings);
}

/** Where the scrub is, kept across restarts so that an agent often restarted still gets through every copy. */
interface ScrubState {
  /** Copies up to this id (in id order) were proved in the current pass and reported; null: none yet. */
  after: string | null;
  passEndedAt: number | null;
}

const STATE_FILE = 'scrub.json';
/** Copies proved are reported at least this often, or per 1000. */
const REPORT_EVERY_MS = 10 * 60_000;
const DAY_MS = 86_400_000;

async function scrub(deps: CopyDeps, dataDirectory: string, settings: ScrubSettings): Promise<void> {
  const { signal } = deps;
  const limiter = createRateLimiter(settings.bytesPerSecond);
  const pace: ReadPace = {
    signal,
    throttle: async (bytes) => {
      const waitMs = limiter.take(bytes);
      if (waitMs > 0) await pause(waitMs, signal);
    },
  };
  let state = await readState(dataDirectory);
  while (!signal.aborted) {
    if (state.after === null && state.passEndedAt !== null) {
      // A timer holds at most ~24 days: wait a day at a time.
      const due = state.passEndedAt + settings.intervalMs;
      while (!signal.aborted && Date.now() < due) await pause(Math.min(due - Date.now(), DAY_MS), signal);
      if (signal.aborted) return;
    }
    state = await scrubPass(deps, dataDirectory, state, pace);
  }
}

/** One pass, from where the last one stopped; returns where it got to (a finished pass: after = null). */
async function scrubPass(deps: CopyDeps, dataDirectory: string, state: ScrubState, pace: ReadPace): Promise<ScrubState> {
  const { store, progress, signal } = deps;
  const records = store
    .copies()
    .filter((record) => state.after === null || record.assetId > state.after)
    .sort((a, b) => (a.assetId < b.assetId ? -1 : a.assetId > b.assetId ? 1 : 0));
  let proved: string[] = [];
  const counts = { proved: 0, lost: 0, skipped: 0 };
  let reportedAt = Date.now();
  let current = state;
  const report = async (after: string | null, passEndedAt: number | null) => {
    await sendCopyReport(deps, proved, []);
    [proved, reportedAt, current] = [[], Date.now(), { after, passEndedAt }];
    await writeState(dataDirectory, current).catch((error: unknown) => progress.log(`scrub: could not keep its place: ${(error as Error).message}`));
  };
  for (const record of records) {
    if (store.copyOf(record.assetId)?.path !== record.path) continue; // Replaced or removed meanwhile.
    const outcome = await scrubOne(deps, record, pace);
    if (signal.aborted) return current;
    counts[outcome] += 1;
    if (outcome === 'proved') proved.push(record.assetId);
    if (proved.length >= 1000 || Date.now() - reportedAt >= REPORT_EVERY_MS) await report(record.assetId, current.passEndedAt);
  }
  if (signal.aborted) return current;
  await report(null, Date.now());
  progress.log(`scrub: pass done: ${counts.proved} copies intact, ${counts.lost} lost, ${counts.skipped} not read`);
  return current;
}

/** One copy re-hashed. Intact: proved. Bad: forgotten and reported lost at once. Unreadable: logged. Throws nothing. */
async function scrubOne(deps: CopyDeps, record: CopyRecord, pace: ReadPace): Promise<'proved' | 'lost' | 'skipped'> {
  const { store, progress } = deps;
  try {
    const check = await checkCopy(store, record.assetId, undefined, 'always', pace);
    if (check.ok) return 'proved';
    if (check.reason === 'unreadable') {
      progress.log(`scrub: ${record.assetId}: ${check.detail}`);
      return 'skipped';
    }
    if (check.bad) await dropCopy(store, check.bad);
    progress.log(`scrub: ${record.assetId}: ${check.detail}; the copy is no longer kept, reported lost`);
    await sendCopyReport(deps, [], [{ asset_id: record.assetId, reason: check.reason, detail: check.detail }]);
    return 'lost';
  } catch (error) {
    if (!deps.signal.aborted) progress.log(`scrub: ${record.assetId}: ${(error as Error).message}`);
    return 'skipped';
  }
}

async function readState(dataDirectory: string): Promise<ScrubState> {
  try {
    const parsed = JSON.parse(await fsp.readFile(path.join(dataDirectory, STATE_FILE), 'utf8')) as Partial<ScrubState>;
    return { after: typeof parsed.after === 'string' ? parsed.after : null, passEndedAt: typeof parsed.passEndedAt === 'number' ? parsed.passEndedAt : null };
  } catch {
    return { after: null, passEndedAt: null };
  }
}

async function writeState(dataDirectory: string, state: ScrubState): Promise<void> {
  await fsp.writeFile(path.join(dataDirectory, STATE_FILE), JSON.stringify(state), { mode: 0o600 });
}
