import crypto from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { loseCopies, type LostCopy } from '../allocations/copy-loss.service.js';
import type { Db } from '../db/database.js';
import { endClaim, renewClaim } from '../db/due-work.js';
import { AppError } from '../errors.js';
import { appendEvents } from '../events/events.repository.js';
import { pause } from '../lib/backoff.js';
import { addStrikes } from '../nodes/liveness.service.js';
import type { Chunk, Delivered, TransferHub } from './transfer-hub.js';
import { holdersOf, insertTransfer, recordProved, transferWork, type Holder } from './transfers.repository.js';
import type { EndedTransferState, TransferPurpose, TransferRow } from './transfers.table.js';

export interface RelayDeps {
  db: Db;
  hub: TransferHub;
  now: () => number;
  /** How long a holder has to send its first chunk, and at most between two chunks. */
  startMs: number;
  idleMs: number;
  /** A holder counts as online when it was heard from within this long. */
  onlineWithinMs: number;
  /** How long a relay that lost every holder midway waits for one to come back before it gives up. */
  holderWaitMs: number;
}

/** What is relayed: bytes [start, end) of an asset's counted copies, all of one size and checksum. */
export interface RelayPlan {
  assetId: string;
  purpose: TransferPurpose;
  sha256: string;
  size: number;
  start: number;
  end: number;
  /** The holders to ask, in order; the list is read again when they run out. */
  holders: Holder[];
}

/** Where relayed bytes go: written in order, ended only once the relay vouches for them. */
export interface RelaySink {
  /** Called before the first byte is written: headers may be sent now. */
  opened(): void;
  /** Written in order, ended once every byte is vouched for. */
  stream: Writable;
  /** How many bytes may wait in `stream` (beyond its own highWaterMark) before the relay waits for it to drain. */
  bufferBytes: number;
  /** Ends the answer short: what was written cannot be vouched for, or no holder can finish it. */
  cutOff(error: Error): void;
}

type Failure = { state: Exclude<EndedTransferState, 'done'>; reason: string; strike?: boolean; lost?: LostCopy['reason'] };
type Outcome = { state: 'done' } | Failure;

/** The holders whose copies have the checksum and size most copies agree on (the asset's own checksum, when it has one). */
export function agreedHolders(holders: Holder[], catalogued: string | null): { sha256: string; size: number; holders: Holder[] } | undefined {
  const groups = new Map<string, Holder[]>();
  for (const holder of holders) {
    if (catalogued !== null && holder.sha256 !== catalogued.toLowerCase()) continue;
    const key = `${holder.sha256}:${holder.bytes}`;
    groups.set(key, [...(groups.get(key) ?? []), holder]);
  }
  const best = [...groups.values()].sort((a, b) => b.length - a.length)[0];
  const first = best?.[0];
  return first && best ? { sha256: first.sha256, size: first.bytes, holders: best } : undefined;
}

export function isOnline(holder: Holder, now: number, withinMs: number): boolean {
  return holderOnline(holder.status, holder.lastHeartbeatAt, now, withinMs);
}

/** A holder is online while it is alive (or draining) and was heard from within `withinMs`. */
export function holderOnline(status: string, lastSeen: number | string | null, now: number, withinMs: number): boolean {
  const seen = typeof lastSeen === 'string' ? Date.parse(lastSeen) : lastSeen;
  return (status === 'alive' || status === 'draining') && seen !== null && seen >= now - withinMs;
}

/** 503 NO_HOLDER_ONLINE, with how many copies exist and when their holders were last heard from. */
export function noHolderOnline(assetId: string, holders: Holder[], retryAfterSeconds: number): AppError {
  return new AppError('NO_HOLDER_ONLINE', `No node holding a copy of "${assetId}" is online; retry later.`, {
    copies: holders.length,
    holders: holders.map((holder) => ({
      node: holder.nodeName,
      last_seen: holder.lastHeartbeatAt === null ? null : new Date(holder.lastHeartbeatAt).toISOString(),
    })),
    retry_after_seconds: retryAfterSeconds,
  });
}

/**
 * Relays a byte range of an asset from its holders into a sink: one transfer (a lease) per holder
 * in turn, each going on from the byte the one before reached. A holder that stalls, drops the
 * connection or refuses is left for the next; one that sends other bytes than asked is struck and
 * not asked again. When the range is the whole copy its sha256 is checked on the way and the last
 * byte is held back until it matches, so a complete answer is always the exact copy; on a
 * mismatch the sink is cut off. `run` rejects with NO_HOLDER_ONLINE when no holder sent a byte,
 * and cuts the sink off when holders ran out midway.
 */
export class Relay {
  private position: number;
  private opened = false;
  private held: Buffer | undefined;
  private readonly hash: crypto.Hash | undefined;
  private readonly contributors = new Set<number>();
  /** The holder that sent every byte of a whole copy, when one did. */
  private soleSender: number | undefined;
  /** Holders left out for now (they stalled or dropped), and for good (they lied). */
  private readonly resting = new Set<number>();
  private readonly struck = new Set<number>();

  constructor(
    private readonly deps: RelayDeps,
    private readonly plan: RelayPlan,
    private readonly sink: RelaySink,
    private readonly signal: AbortSignal,
  ) {
    this.position = plan.start;
    this.hash = plan.start === 0 && plan.end === plan.size ? crypto.createHash('sha256') : undefined;
  }

  async run(): Promise<void> {
    let candidates = this.plan.holders;
    let waitingSince: number | undefined;
    while (this.position < this.plan.end) {
      if (this.signal.aborted) return;
      const now = this.deps.now();
      const holder = candidates.find(
        (candidate) => !this.resting.has(candidate.nodeId) && !this.struck.has(candidate.nodeId) && isOnline(candidate, now, this.deps.onlineWithinMs),
      );
      if (holder) {
        waitingSince = undefined;
        const outcome = await this.serveFrom(holder);
        this.contributors.add(holder.nodeId);
        if (outcome.state !== 'done') (outcome.strike ? this.struck : this.resting).add(holder.nodeId);
        continue;
      }
      if (!this.opened) throw noHolderOnline(this.plan.assetId, candidates, 30);
      waitingSince ??= now;
      if (now - waitingSince >= this.deps.holderWaitMs) {
        this.sink.cutOff(new Error('No holder of this copy is online any more.'));
        return;
      }
      await pause(1000, this.signal);
      candidates = (await holdersOf(this.deps.db, this.plan.assetId)).filter((found) => found.sha256 === this.plan.sha256 && found.bytes === this.plan.size);
      this.resting.clear();
    }
    const found = this.hash?.digest('hex');
    if (found !== undefined && found !== this.plan.sha256) {
      await this.recordMismatch(found);
      this.sink.cutOff(new Error(`The relayed bytes have sha256 ${found}, not ${this.plan.sha256}.`));
      return;
    }
    // Bytes this instance hashed itself prove the copy they came from: its holder need not hash them too.
    if (found !== undefined && this.soleSender !== undefined) await recordProved(this.deps.db, this.soleSender, [this.plan.assetId], this.deps.now());
    // The last byte goes out only now, with the end: the answer completes once the checksum
    // matched and the transfers are recorded, and no client holds every byte of an open answer.
    this.open();
    if (this.held) this.sink.stream.write(this.held);
    this.sink.stream.end();
  }

  /** One transfer from one holder, from the current position to the end or until it fails. */
  private async serveFrom(holder: Holder): Promise<Outcome> {
    const { deps, plan } = this;
    const now = deps.now();
    const token = crypto.randomBytes(32).toString('base64url');
    const transfer = await insertTransfer(
      deps.db,
      {
        assetId: plan.assetId,
        holder,
        purpose: plan.purpose,
        rangeStart: this.position,
        rangeEnd: plan.end,
        relayUrl: deps.hub.selfUrl,
        relayToken: token,
        leaseUntil: now + deps.startMs,
      },
      now,
    );
    const outcome = await new Promise<Outcome>((resolve) => {
      let settled = false;
      let busy = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (result: Outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.signal.removeEventListener('abort', onAbort);
        resolve(result);
      };
      const arm = (ms: number, why: string) => {
        clearTimeout(timer);
        timer = setTimeout(() => settle({ state: 'expired', reason: why }), ms);
      };
      const onAbort = () => settle({ state: 'cancelled', reason: 'the requester went away' });
      this.signal.addEventListener('abort', onAbort, { once: true });
      const deliver = async (chunk: Chunk): Promise<Delivered> => {
        if (settled) throw new AppError('TRANSFER_ENDED', `Transfer ${transfer.id} has ended.`);
        if (busy) throw new AppError('TRANSFER_OFFSET', `A chunk of transfer ${transfer.id} is still arriving; send the next one after it.`);
        if (chunk.start !== this.position || chunk.length <= 0 || chunk.start + chunk.length > plan.end) {
          settle({ state: 'failed', reason: `sent bytes ${chunk.start}+${chunk.length}, expected from ${this.position}`, strike: true });
          throw new AppError(
            'TRANSFER_OFFSET',
            `Transfer ${transfer.id} expects bytes from ${this.position} up to ${plan.end}, not ${chunk.start}+${chunk.length}.`,
          );
        }
        busy = true;
        clearTimeout(timer);
        let received = 0;
        try {
          for await (const piece of chunk.body) {
            if (settled) throw new AppError('TRANSFER_ENDED', `Transfer ${transfer.id} has ended.`);
            const bytes = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
            if (received + bytes.length > chunk.length) {
              settle({ state: 'failed', reason: 'sent more bytes than its Content-Range announced', strike: true });
              throw new AppError('TRANSFER_OFFSET', `Transfer ${transfer.id}: more bytes than the chunk announced.`);
            }
            received += bytes.length;
            const full = this.write(bytes);
            if (full) await full;
          }
        } catch (error) {
          settle({ state: 'failed', reason: 'the chunk broke off' });
          throw error;
        } finally {
          busy = false;
        }
        if (received < chunk.length) {
          settle({ state: 'failed', reason: 'the chunk ended before its announced length' });
          throw new AppError('TRANSFER_OFFSET', `Transfer ${transfer.id}: the chunk ended after ${received} of ${chunk.length} bytes.`);
        }
        const sent = this.position - transfer.range_start;
        const renewed = await renewClaim(deps.db, transferWork, { id: transfer.id }, { now: deps.now(), leaseMs: deps.idleMs, set: { bytes_sent: sent } });
        if (!renewed) {
          settle({ state: 'expired', reason: 'its lease lapsed' });
          throw new AppError('TRANSFER_ENDED', `Transfer ${transfer.id} has ended.`);
        }
        const done = this.position === plan.end;
        if (done) settle({ state: 'done' });
        else arm(deps.idleMs, 'no next chunk in time');
        return { received: sent, done };
      };
      const refuse = (reason: string, detail: string) =>
        settle({ state: 'failed', reason: `${reason}${detail ? `: ${detail}` : ''}`, lost: reason === 'missing' || reason === 'corrupt' ? reason : undefined });
      deps.hub.register(transfer.id, { token, deliver, refuse });
      deps.hub.wake(holder.nodeId);
      arm(deps.startMs, 'no first chunk in time');
    });
    deps.hub.unregister(transfer.id);
    await this.endTransfer(transfer, outcome);
    if (outcome.state === 'done' && transfer.range_start === plan.start) this.soleSender = holder.nodeId;
    return outcome;
  }

  /**
   * Writes relayed bytes in order; the last byte waits for `run` to vouch for the rest. Returns a
   * promise to wait for only when the sink holds more than its buffer: a socket takes a piece larger
   * than its highWaterMark at once while the kernel has room, and waiting for 'drain' after every
   * piece would cost a turn of the event loop each.
   */
  private write(bytes: Buffer): Promise<void> | undefined {
    const { stream } = this.sink;
    this.open();
    this.hash?.update(bytes);
    this.position += bytes.length;
    let out = bytes;
    if (this.position === this.plan.end) {
      this.held = Buffer.from(bytes.subarray(bytes.length - 1));
      out = bytes.subarray(0, bytes.length - 1);
    }
    if (out.length === 0) return undefined;
    stream.write(out);
    if (stream.writableLength <= this.sink.bufferBytes) return undefined;
    return once(stream, 'drain', { signal: this.signal }).then(() => undefined);
  }

  private open(): void {
    if (this.opened) return;
    this.opened = true;
    this.sink.opened();
  }

  private async endTransfer(transfer: TransferRow, outcome: Outcome): Promise<void> {
    const { db } = this.deps;
    const now = this.deps.now();
    const reason = outcome.state === 'done' ? null : outcome.reason;
    const ended = await endClaim(db, transferWork, { id: transfer.id }, outcome.state, { ended_at: now, end_reason: reason });
    if (ended.length > 0) {
      await appendEvents(db, now, [
        {
          actor: 'system',
          kind: `transfer.${outcome.state}`,
          subjectType: 'transfer',
          subjectId: transfer.id,
          data: {
            asset_id: transfer.asset_id,
            node_id: transfer.node_id,
            purpose: transfer.purpose,
            from: transfer.range_start,
            reached: this.position,
            reason,
          },
        },
      ]);
    }
    if (outcome.state === 'done') return;
    if (outcome.strike) await addStrikes(db, [transfer.node_id], 1);
    if (outcome.lost) await loseCopies(db, transfer.node_id, [{ assetId: transfer.asset_id, reason: outcome.lost, detail: outcome.reason }], 'system', now);
  }

  /**
   * The whole copy was relayed and its checksum is not the counted one. With one holder the liar is
   * known: its copy stops counting and it is struck. With several, the event names them all.
   */
  private async recordMismatch(found: string): Promise<void> {
    const { db } = this.deps;
    const now = this.deps.now();
    const nodes = [...this.contributors];
    await appendEvents(db, now, [
      {
        actor: 'system',
        kind: 'asset.restore_mismatch',
        subjectType: 'asset',
        subjectId: this.plan.assetId,
        data: { nodes, expected: this.plan.sha256, found },
      },
    ]);
    const [only] = nodes;
    if (nodes.length === 1 && only !== undefined) {
      await addStrikes(db, [only], 1);
      await loseCopies(db, only, [{ assetId: this.plan.assetId, reason: 'wrong_bytes', detail: `served bytes with sha256 ${found}` }], 'system', now);
    }
  }
}
