import fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import { backoffDelay, pause } from '../lib/backoff.js';
import { ApiError, withBackoff, type ChunkRange, type TransferItem } from './client.js';
import { checkCopy, dropCopy, type CopyCheck, type CopyDeps } from './copy-check.js';
import { retryOptions } from './registration.js';

const MIB = 1024 * 1024;
/** Transfers served at once; more wait their turn. */
const MAX_RUNNING = 2;
/** The long-poll's wait: within the control plane's 60 s, and short of the idle timeout of common proxies. */
const POLL_WAIT_SECONDS = 50;
/** An answer naming no transfer to take now comes back at once: the next poll waits this long first. */
const NOTHING_NEW_PAUSE_MS = 5_000;
const RETURN_BASE_MS = 5_000;
const RETURN_MAX_MS = 300_000;
const FIRST_CHUNK_BYTES = 4 * MIB;
const MIN_CHUNK_BYTES = 256 * 1024;
/** A chunk should take about this long at the measured upload rate, far inside any request timeout. */
const CHUNK_SECONDS = 5;

/**
 * The next chunk's size: 4 MiB before any rate is measured, then what the measured upload rate
 * sends in 5 s, at least 256 KiB; never more than `maxChunkBytes` nor than what is left.
 */
export function chunkBytes(rateBytesPerSecond: number | undefined, maxChunkBytes: number, remaining: number): number {
  const wanted = rateBytesPerSecond === undefined ? FIRST_CHUNK_BYTES : Math.max(MIN_CHUNK_BYTES, Math.floor(rateBytesPerSecond * CHUNK_SECONDS));
  return Math.max(1, Math.min(wanted, maxChunkBytes, remaining));
}

/** The upload rate last measured, shared by every transfer of this agent (they share its uplink). */
interface UploadRate {
  bytesPerSecond?: number;
}

/**
 * Which offered transfers to take: one per id while it is in hand. One that ended here and comes
 * back (moved on to this node again, or not yet ended on the control plane) waits 5 s, doubling per
 * return up to 5 min, so that a transfer that keeps failing is never retried in a tight loop.
 */
export function createIntake(now: () => number = Date.now) {
  const inHand = new Set<number>();
  const ended = new Map<number, { returns: number; until: number }>();
  return {
    take(items: TransferItem[]): TransferItem[] {
      const at = now();
      for (const [id, entry] of ended) if (entry.until + RETURN_MAX_MS < at) ended.delete(id);
      const taken: TransferItem[] = [];
      for (const item of items) {
        if (inHand.has(item.id) || (ended.get(item.id)?.until ?? 0) > at) continue;
        inHand.add(item.id);
        taken.push(item);
      }
      return taken;
    },
    release(id: number): void {
      inHand.delete(id);
      const returns = (ended.get(id)?.returns ?? 0) + 1;
      ended.set(id, { returns, until: now() + backoffDelay(returns - 1, RETURN_BASE_MS, RETURN_MAX_MS) });
    },
  };
}

export interface TransferLoop {
  /** Transfers named elsewhere (a heartbeat answer): those `createIntake` takes are queued. */
  offer(items: TransferItem[]): void;
  /** Settles once the signal has aborted and the long-poll and every running transfer have ended. */
  stopped: Promise<void>;
}

/**
 * Serves the control plane's transfers until `signal` aborts: keeps one long-poll open (asking
 * again at once after an answer, with backoff after an error), takes those heartbeats name too,
 * and runs at most two at once.
 */
export function startTransfers(deps: CopyDeps): TransferLoop {
  const queue: TransferItem[] = [];
  const intake = createIntake();
  const running = new Set<Promise<void>>();
  const upload: UploadRate = {};
  const startWaiting = () => {
    while (!deps.signal.aborted && running.size < MAX_RUNNING && queue.length > 0) {
      const item = queue.shift() as TransferItem;
      const run: Promise<void> = serveTransfer(item, deps, upload)
        .catch((error: unknown) => {
          if (!deps.signal.aborted) deps.progress.log(`transfer ${item.id}: ${(error as Error).message}`);
        })
        .finally(() => {
          running.delete(run);
          intake.release(item.id);
          startWaiting();
        });
      running.add(run);
    }
  };
  const offer = (items: TransferItem[]): number => {
    const taken = intake.take(items);
    queue.push(...taken);
    startWaiting();
    return taken.length;
  };
  const stopped = (async () => {
    await pollTransfers(deps, offer);
    while (running.size > 0) await Promise.all(running);
  })();
  return { offer: (items) => void offer(items), stopped };
}

async function pollTransfers(deps: CopyDeps, offer: (items: TransferItem[]) => number): Promise<void> {
  const { client, nodeId, progress, signal } = deps;
  const retry = {
    signal,
    onRetry: (error: unknown, delay: number) =>
      progress.log(`asking for transfers failed (${(error as Error).message}); again in ${Math.round(delay / 1000)} s`),
  };
  while (!signal.aborted) {
    // Every error is retried, so this rejects only once the agent stops.
    const items = await withBackoff(() => client.transfers(nodeId, POLL_WAIT_SECONDS, signal), retry).catch(() => null);
    if (items === null) return;
    if (items.length > 0 && offer(items) === 0) await pause(NOTHING_NEW_PAUSE_MS, signal);
  }
}

/**
 * One transfer: the copy is checked first (refused with the reason when it cannot be served, a bad
 * copy forgotten), then sent chunk by chunk as it is read. What is sent is not hashed here: the
 * control plane hashes every byte it relays, and it is the one that proves the copy (or strikes
 * this node and stops counting it) once the whole copy went through.
 */
async function serveTransfer(item: TransferItem, deps: CopyDeps, upload: UploadRate): Promise<void> {
  const { progress, signal } = deps;
  const label = `transfer ${item.id} (${item.purpose} of ${item.asset_id})`;
  const { offset, length, size } = item;
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length > 0 && offset + length <= size))
    return progress.log(`${label}: ${length} bytes from ${offset} are not within a copy of ${size} bytes; skipped`);
  const check = await checkCopy(deps.store, item.asset_id, { sha256: item.sha256, bytes: size }, 'if-changed', { signal });
  if (!check.ok) return refuse(item, check, deps, label);
  progress.log(`${label}: sending bytes ${offset}–${offset + length - 1} of ${size}`);
  const sent = await sendRange(item, check.record.path, deps, upload);
  if (sent.stopped !== undefined) return progress.log(`${label}: stopped after ${sent.bytes} bytes: ${sent.stopped}`);
  progress.log(`${label}: sent ${sent.bytes} bytes`);
}

async function refuse(item: TransferItem, check: Extract<CopyCheck, { ok: false }>, deps: CopyDeps, label: string): Promise<void> {
  const { client, progress, signal } = deps;
  if (check.bad) await dropCopy(deps.store, check.bad);
  progress.log(`${label}: cannot serve it (${check.reason}): ${check.detail}${check.bad ? '; the copy is no longer kept' : ''}`);
  await withBackoff(() => client.failTransfer(item.id, check.reason, check.detail, signal), retryOptions(progress, signal)).catch((error: unknown) => {
    if (!signal.aborted) progress.log(`${label}: could not say so: ${(error as Error).message}`);
  });
}

/** `stopped` when the transfer ended early. */
type Sent = { bytes: number; stopped?: string };

/**
 * Sends the item's range in sequential chunks, each read from the file as it goes. Any refusal or
 * network error ends the transfer: the control plane moves it on. A chunk the network failed halves
 * the next one, so a slow uplink still fits a chunk within the request timeout.
 */
async function sendRange(item: TransferItem, file: string, deps: CopyDeps, upload: UploadRate): Promise<Sent> {
  const end = item.offset + item.length;
  let start = item.offset;
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, 'r');
  } catch (error) {
    return { bytes: 0, stopped: describe(error) };
  }
  // The transfer's own read buffers, reused chunk after chunk; never again once it ended early.
  const slots = readSlots(item.length);
  try {
    while (start < end) {
      const bytes = chunkBytes(upload.bytesPerSecond, item.max_chunk_bytes, end - start);
      const range: ChunkRange = { start, end: start + bytes - 1, size: item.size };
      const began = performance.now();
      let answer: { received: number; done: boolean };
      const body = readRange(handle, slots, range);
      try {
        answer = await deps.client.sendChunk(item.url, range, body, deps.signal);
      } catch (error) {
        if (!(error instanceof ApiError) && !deps.signal.aborted) upload.bytesPerSecond = bytes / 2 / CHUNK_SECONDS;
        return { bytes: start - item.offset, stopped: deps.signal.aborted ? 'the agent is stopping' : describe(error) };
      } finally {
        // The read stops with the answer, also one that came before the body was all sent.
        body.destroy();
      }
      if (bytes >= MIN_CHUNK_BYTES) upload.bytesPerSecond = bytes / Math.max(0.001, (performance.now() - began) / 1000);
      start += bytes;
      // The control plane has what it needs (the rest came from elsewhere).
      if (answer.done && start < end) return { bytes: start - item.offset };
    }
    return { bytes: start - item.offset };
  } finally {
    // Waits for a read still under way.
    await handle.close();
  }
}

/** Reads of a copy being sent: large, so that few buffers pass from the disk to the socket. */
const READ_BYTES = MIB;
/** Read buffers a transfer takes turns with (see `readRange`). */
const READ_SLOTS = 8;

/** The read buffers of a transfer of `length` bytes: READ_SLOTS of them, none longer than the transfer. */
export function readSlots(length: number): Buffer[] {
  const size = Math.min(READ_BYTES, length);
  return Array.from({ length: READ_SLOTS }, () => Buffer.allocUnsafeSlow(size));
}

/**
 * Bytes [start, end] of an open copy as a stream of pieces read into `slots` in turn, so that
 * sending allocates nothing per piece: a fresh buffer per read would have the garbage collector
 * mark the whole heap every few dozen MiB. A slot is read into again only READ_SLOTS pieces
 * later, and no more than three pieces are ever in use: this stream reads one piece ahead
 * (its highWaterMark), and the HTTP client writes a piece to its socket and, when the socket does
 * not take it at once (a piece is larger than the socket's highWaterMark), pauses this stream
 * until the socket has written everything it holds. `transfers.test.ts` sends through the real
 * client to a slow reader to hold that to account.
 */
export function readRange(handle: fsp.FileHandle, slots: Buffer[], range: { start: number; end: number }): Readable {
  let at = range.start;
  let turn = 0;
  return new Readable({
    highWaterMark: slots[0]?.length ?? 1,
    read() {
      const slot = slots[turn++ % slots.length] as Buffer;
      const wanted = Math.min(slot.length, range.end + 1 - at);
      if (wanted <= 0) return void this.push(null);
      handle.read(slot, 0, wanted, at).then(
        ({ bytesRead }) => {
          if (bytesRead === 0) return void this.destroy(new Error(`the copy ends at byte ${at}, before byte ${range.end}`));
          at += bytesRead;
          this.push(slot.subarray(0, bytesRead));
        },
        (error: Error) => this.destroy(error),
      );
    },
  });
}

function describe(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  const cause = (error as Error).cause;
  return cause instanceof Error ? `${(error as Error).message}: ${cause.message}` : String((error as Error).message ?? error);
}
