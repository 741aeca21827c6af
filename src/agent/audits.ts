import { once } from 'node:events';
import fsp from 'node:fs/promises';
import { blockCount, nonceHasher, pieceRangeOf, proveBlock } from '../lib/merkle.js';
import { withBackoff, type AuditAnswer, type AuditItem } from './client.js';
import { checkCopy, dropCopy, type CopyDeps } from './copy-check.js';
import { retryOptions } from './registration.js';
import type { CopyRecord } from './storage.js';

/** Audits answered at once; more wait their turn. */
const MAX_RUNNING = 2;
/** An audit ended here is remembered this long past its deadline: a heartbeat that still lists it does not get it answered twice. */
const REMEMBER_MS = 3_600_000;
/** A range is read in pieces of this size, so that no range, however long, is held in memory. */
const READ_BYTES = 1024 * 1024;
/** The longest a timer can wait. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const MISSING: AuditAnswer = { missing: true };

/**
 * Which offered audits to take: each id once. One in hand (queued or running) or ended here
 * (answered, or given up) is skipped whenever it is offered again, until an hour past its deadline.
 */
export function createAuditIntake(now: () => number = Date.now) {
  const inHand = new Set<number>();
  const ended = new Map<number, number>();
  return {
    take(items: AuditItem[]): AuditItem[] {
      const at = now();
      for (const [id, forgetAt] of ended) if (forgetAt <= at) ended.delete(id);
      const taken: AuditItem[] = [];
      for (const item of items) {
        if (inHand.has(item.id) || ended.has(item.id)) continue;
        inHand.add(item.id);
        taken.push(item);
      }
      return taken;
    },
    end(item: AuditItem): void {
      inHand.delete(item.id);
      const deadline = Date.parse(item.deadline);
      ended.set(item.id, Math.max(Number.isFinite(deadline) ? deadline : 0, now()) + REMEMBER_MS);
    },
  };
}

export interface AuditLoop {
  /** Audits named by the control plane (a heartbeat answer): those `createAuditIntake` takes are queued. */
  offer(items: AuditItem[]): void;
  /** Settles once no audit is queued or running. */
  idle(): Promise<void>;
  /** Settles once the signal has aborted and every running audit has ended; queued ones are dropped. */
  stopped: Promise<void>;
}

/** Answers the control plane's audits about this node's copies, at most two at once, until `deps.signal` aborts. */
export function startAudits(deps: CopyDeps): AuditLoop {
  const { progress, signal } = deps;
  const queue: AuditItem[] = [];
  const intake = createAuditIntake();
  const running = new Set<Promise<void>>();
  const startWaiting = () => {
    while (!signal.aborted && running.size < MAX_RUNNING && queue.length > 0) {
      const item = queue.shift() as AuditItem;
      const run: Promise<void> = answerAudit(item, deps)
        .catch((error: unknown) => {
          if (!signal.aborted) progress.log(`${labelOf(item)}: not answered: ${(error as Error).message}`);
        })
        .finally(() => {
          running.delete(run);
          intake.end(item);
          startWaiting();
        });
      running.add(run);
    }
  };
  const idle = async () => {
    while (running.size > 0) await Promise.all(running);
  };
  const stopped = (async () => {
    if (!signal.aborted) await once(signal, 'abort');
    queue.length = 0;
    await idle();
  })();
  return {
    offer(items) {
      queue.push(...intake.take(items));
      startWaiting();
    },
    idle,
    stopped,
  };
}

const labelOf = (item: AuditItem) => `audit ${item.id} (${item.kind} of ${item.asset_id})`;

/** What the copy shows, or why this node cannot answer for it (`bad`: the copy that proved bad, to be forgotten). */
type Finding = { answer: AuditAnswer } | { notHere: string; bad?: CopyRecord };

/**
 * One audit, answered before its deadline or not at all: the copy is read as far as the audit
 * needs, the answer sent (asked again while the control plane cannot be reached). A copy that is
 * not here, or not the size or content recorded, is answered missing, and a bad one forgotten.
 */
async function answerAudit(item: AuditItem, deps: CopyDeps): Promise<void> {
  const left = Date.parse(item.deadline) - Date.now();
  if (!(left > 0)) return deps.progress.log(`${labelOf(item)}: its deadline (${item.deadline}) has passed; not answered`);
  const signal = AbortSignal.any([deps.signal, AbortSignal.timeout(Math.min(left, MAX_TIMER_MS))]);
  try {
    await examineAndAnswer(item, deps, signal);
  } catch (error) {
    if (signal.aborted && !deps.signal.aborted) throw new Error(`its deadline (${item.deadline}) passed before it was answered`, { cause: error });
    throw error;
  }
}

async function examineAndAnswer(item: AuditItem, deps: CopyDeps, signal: AbortSignal): Promise<void> {
  const { client, progress } = deps;
  const finding = await examine(item, deps, signal);
  if ('notHere' in finding) {
    if (finding.bad) await dropCopy(deps.store, finding.bad);
    progress.log(`${labelOf(item)}: ${finding.notHere}; answering that the copy is not here${finding.bad ? ' (it is no longer kept)' : ''}`);
  }
  const answer = 'answer' in finding ? finding.answer : MISSING;
  await withBackoff(() => client.answerAudit(item.url, answer, signal), retryOptions(progress, signal));
  if ('answer' in finding) progress.log(`${labelOf(item)}: answered`);
}

async function examine(item: AuditItem, deps: CopyDeps, signal: AbortSignal): Promise<Finding> {
  const check = await checkCopy(deps.store, item.asset_id, undefined, 'never');
  if (!check.ok) return { notHere: check.detail, ...(check.bad ? { bad: check.bad } : {}) };
  try {
    return item.kind === 'ranges' ? await hashRanges(item, check.record, signal) : await proveBlockOf(item, deps, check.record, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { notHere: 'its file is gone from disk', bad: check.record };
    throw error;
  }
}

/** Each range hashed after the nonce, read in pieces; a range past the end of the copy means this is not the copy audited. */
async function hashRanges(item: AuditItem, record: CopyRecord, signal: AbortSignal): Promise<Finding> {
  const { nonce, ranges } = item;
  if (nonce === null) throw new Error('a ranges audit names no nonce');
  nonceHasher(nonce); // Refuses a nonce that is not hex before any byte is read.
  for (const { offset, length } of ranges) {
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0))
      throw new Error(`malformed range (${offset}, ${length})`);
    if (offset + length > record.bytes) return { notHere: `it asks for bytes up to ${offset + length} of a copy of ${record.bytes}` };
  }
  const file = await fsp.open(record.path, 'r');
  try {
    const buffer = Buffer.alloc(
      Math.min(
        READ_BYTES,
        ranges.reduce((longest, range) => Math.max(longest, range.length), 1),
      ),
    );
    const hashes: string[] = [];
    for (const { offset, length } of ranges) {
      const hash = nonceHasher(nonce);
      for (let done = 0; done < length;) {
        signal.throwIfAborted();
        const { bytesRead } = await file.read(buffer, 0, Math.min(buffer.length, length - done), offset + done);
        if (bytesRead === 0) return { notHere: `its file ends before byte ${offset + done}`, bad: record };
        hash.update(buffer.subarray(0, bytesRead));
        done += bytesRead;
      }
      hashes.push(hash.digest('hex'));
    }
    return { answer: { hashes } };
  } finally {
    await file.close();
  }
}

/** The block and its Merkle path, from its piece (re-read) and the piece layer kept beside the copy (rebuilt when missing). */
async function proveBlockOf(item: AuditItem, deps: CopyDeps, record: CopyRecord, signal: AbortSignal): Promise<Finding> {
  const index = item.block;
  if (index === null || !Number.isSafeInteger(index) || index < 0) throw new Error(`malformed block index ${index}`);
  const blocks = blockCount(record.bytes);
  if (index >= blocks) return { notHere: `it asks for block ${index} of a copy of ${blocks} blocks` };
  const kept = await deps.store.pieceLayerOf(item.asset_id, { signal });
  if (!kept) return { notHere: 'its file no longer matches its record', bad: record };
  const range = pieceRangeOf(record.bytes, index);
  const piece = await readExactly(record.path, range.offset, range.length);
  if (!piece) return { notHere: `its file ends before byte ${range.offset + range.length}`, bad: record };
  const proved = proveBlock({ size: record.bytes, pieceLayer: kept.pieceLayer, index, piece });
  if (!proved) return { notHere: `the piece at byte ${range.offset} no longer hashes to its Merkle root`, bad: record };
  return { answer: { block: proved.block.toString('base64'), proof: proved.proof } };
}

/** `length` bytes from `offset` (at most one piece), or null when the file ends first. */
async function readExactly(path: string, offset: number, length: number): Promise<Buffer | null> {
  const file = await fsp.open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    for (let done = 0; done < length;) {
      const { bytesRead } = await file.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) return null;
      done += bytesRead;
    }
    return buffer;
  } finally {
    await file.close();
  }
}
