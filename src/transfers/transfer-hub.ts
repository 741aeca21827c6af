import type { Db } from '../db/database.js';
import { nodesWithOpenTransfers } from './transfers.repository.js';

/** One chunk of a transfer as it arrives: where it starts in the copy, how long it says it is, its bytes. */
export interface Chunk {
  start: number;
  length: number;
  body: AsyncIterable<Uint8Array>;
}

export interface Delivered {
  /** Bytes of the transfer's range received so far. */
  received: number;
  done: boolean;
}

/** The receiving end of one transfer, on the instance whose requester waits for its bytes. */
export interface Receiver {
  /** The secret another instance forwards this transfer's chunks with. */
  token: string;
  deliver(chunk: Chunk): Promise<Delivered>;
  /** The holder said it cannot send (its copy is missing, corrupt or unreadable). */
  refuse(reason: string, detail: string): void;
}

/** Where other instances on the same machine reach this one: loopback, unless it listens on one address only. */
export function instanceUrlOf(host: string, port: number): string {
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const address = wildcard ? '127.0.0.1' : host;
  return `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/** How often an instance looks for transfers created on other instances for the nodes long-polling it. */
const POLL_MS = 1000;

/**
 * What one instance knows in memory about transfers: the receivers waiting here for bytes, and the
 * nodes long-polling here for work to send. A transfer created here wakes its node's long-poll at
 * once; one created on another instance is found by a poll of the database while nodes wait.
 */
export class TransferHub {
  private readonly receivers = new Map<number, Receiver>();
  private readonly waiters = new Map<number, Set<() => void>>();
  private poller: NodeJS.Timeout | undefined;
  private closed = false;
  private url: string | undefined;

  constructor(private readonly db: Db) {}

  /** This instance's own base URL, as other instances reach it (set once it listens). */
  get selfUrl(): string {
    if (this.url === undefined) throw new Error('The transfer hub has no URL before the server listens.');
    return this.url;
  }

  set selfUrl(url: string) {
    this.url = url.replace(/\/+$/, '');
  }

  receiver(id: number): Receiver | undefined {
    return this.receivers.get(id);
  }

  register(id: number, receiver: Receiver): void {
    this.receivers.set(id, receiver);
  }

  unregister(id: number): void {
    this.receivers.delete(id);
  }

  /** Ends a node's long-polls on this instance: it has a transfer to send. */
  wake(nodeId: number): void {
    const waiting = this.waiters.get(nodeId);
    if (!waiting) return;
    this.waiters.delete(nodeId);
    for (const resolve of waiting) resolve();
    if (this.waiters.size === 0) this.stopPolling();
  }

  /** Resolves when `nodeId` may have a transfer to send, after `ms` at the latest, or when `signal` aborts. */
  waitForWork(nodeId: number, ms: number, signal: AbortSignal): Promise<void> {
    if (this.closed || ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        const waiting = this.waiters.get(nodeId);
        waiting?.delete(done);
        if (waiting?.size === 0) this.waiters.delete(nodeId);
        if (this.waiters.size === 0) this.stopPolling();
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      const waiting = this.waiters.get(nodeId) ?? new Set();
      waiting.add(done);
      this.waiters.set(nodeId, waiting);
      this.startPolling();
    });
  }

  /** Whether the instance is stopping: long-poll answers then close their connection. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Wakes every long-poll and refuses new waits: the instance is stopping. */
  close(): void {
    this.closed = true;
    for (const nodeId of [...this.waiters.keys()]) this.wake(nodeId);
    this.stopPolling();
  }

  private startPolling(): void {
    if (this.poller !== undefined) return;
    this.poller = setInterval(() => void this.poll(), POLL_MS);
    this.poller.unref();
  }

  private stopPolling(): void {
    clearInterval(this.poller);
    this.poller = undefined;
  }

  private async poll(): Promise<void> {
    try {
      for (const nodeId of await nodesWithOpenTransfers(this.db, [...this.waiters.keys()])) this.wake(nodeId);
    } catch {
      // A failed look leaves the long-polls to their timeout; the next tick looks again.
    }
  }
}
