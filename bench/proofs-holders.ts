import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildConnector, Client } from 'undici';
import type { BenchNode } from './api.js';
import { runLoops, type LoopResult, type WindowOptions } from './loops.js';
import { answerFor, type OfferedAudit, type Shape } from './proofs-content.js';

/** Bytes that went over a set of connections, both ways, counted at the socket (HTTP headers included). */
export interface WireBytes {
  sent: number;
  received: number;
}

/** An undici client whose sockets are remembered, so what it sent and received can be read at the socket. */
function countingClient(baseUrl: string, sockets: Set<Socket>): Client {
  const base = buildConnector({});
  const connect = (options: buildConnector.Options, callback: buildConnector.Callback) =>
    base(options, ((error: Error | null, socket: Socket | null) => {
      if (socket) sockets.add(socket);
      (callback as (error: Error | null, socket: Socket | null) => void)(error, socket);
    }) as buildConnector.Callback);
  return new Client(baseUrl, { keepAliveTimeout: 60_000, pipelining: 1, connect });
}

function wireOf(sockets: Set<Socket>): WireBytes {
  let [sent, received] = [0, 0];
  for (const socket of sockets) [sent, received] = [sent + socket.bytesWritten, received + socket.bytesRead];
  return { sent, received };
}

/**
 * `POST /complete` of each node's seeded allocations, one closed loop per node on its own
 * connection, through the shared load driver. A node that has completed all of its allocations
 * reports `exhausted` (the seed was too small for the rate: the run says so in its errors).
 */
export async function runCompletions(baseUrl: string, nodes: BenchNode[], assets: string[][], shape: Shape, window: WindowOptions): Promise<LoopResult> {
  const clients = nodes.map(() => new Client(baseUrl, { keepAliveTimeout: 60_000, pipelining: 1 }));
  const next = nodes.map(() => 0);
  try {
    return await runLoops(
      nodes.map((node, index) => async () => {
        const assetId = assets[index]?.[next[index] as number];
        if (assetId === undefined) {
          await sleep(50);
          return { ok: false, status: 'exhausted', items: 0, errorBody: `node ${node.name} completed all ${assets[index]?.length} of its allocations` };
        }
        next[index] = (next[index] as number) + 1;
        const body = { asset_id: assetId, node_id: node.name, sha256: shape.sha256, bytes: shape.size, merkle_root: shape.merkleRoot };
        const response = await (clients[index] as Client).request({
          method: 'POST',
          path: '/complete',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${node.token}` },
          body: JSON.stringify(body),
        });
        const text = await response.body.text();
        return response.statusCode === 200
          ? { ok: true, status: '200', items: 1 }
          : { ok: false, status: String(response.statusCode), items: 0, errorBody: text };
      }),
      window,
    );
  } finally {
    await Promise.all(clients.map((client) => client.close().catch(() => client.destroy())));
  }
}

/** How long stop() waits for the requests under way before it cuts them. */
const STOP_GRACE_MS = 5_000;

export interface HolderTotals {
  heartbeats: number;
  /** Heartbeats that listed at least one audit. */
  heartbeatsWithAudits: number;
  /** Answers the control plane judged (200), and their verdicts. */
  answered: number;
  passed: number;
  failed: number;
  /** Anything else: a status or error code, with one sample body each. */
  errors: Record<string, number>;
  errorSamples: Record<string, string>;
  /** JSON bytes of the audit items the heartbeat answers listed. */
  itemBytes: number;
  items: number;
  heartbeatWire: WireBytes;
  answerWire: WireBytes;
}

export interface Holders {
  totals(): HolderTotals;
  /** performance.now() of each judged answer, for rates over a window. */
  answeredAt: readonly number[];
  /** Ends every holder's loop after its current call and closes the connections. */
  stop(): Promise<HolderTotals>;
  /** Settles once every holder's loop has ended (on its own when `idleMs` is undefined). */
  done: Promise<void>;
}

export interface HolderOptions {
  baseUrl: string;
  nodes: BenchNode[];
  shapeOf: (assetId: string) => Shape;
  /** A heartbeat that lists nothing: ask again after this long, or (undefined) end that holder. */
  idleMs?: number;
}

/**
 * Simulated holders: each heartbeats (`POST /api/nodes/{id}/heartbeat`, as the agent learns of its
 * audits), answers every audit listed with the honest answer from its copy's content, in turn, on
 * a second connection (so heartbeat and answer bytes are counted apart), and heartbeats again at
 * once; a heartbeat listing nothing waits `idleMs`.
 */
export function startHolders(options: HolderOptions): Holders {
  const heartbeatSockets = new Set<Socket>();
  const answerSockets = new Set<Socket>();
  const totals: HolderTotals = {
    heartbeats: 0,
    heartbeatsWithAudits: 0,
    answered: 0,
    passed: 0,
    failed: 0,
    errors: {},
    errorSamples: {},
    itemBytes: 0,
    items: 0,
    heartbeatWire: { sent: 0, received: 0 },
    answerWire: { sent: 0, received: 0 },
  };
  const answeredAt: number[] = [];
  const fail = (status: string, body: string) => {
    totals.errors[status] = (totals.errors[status] ?? 0) + 1;
    totals.errorSamples[status] ??= body.slice(0, 300);
  };
  let stopped = false;
  const clients: Client[] = [];
  const holder = async (node: BenchNode) => {
    const heartbeats = countingClient(options.baseUrl, heartbeatSockets);
    const answers = countingClient(options.baseUrl, answerSockets);
    clients.push(heartbeats, answers);
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${node.token}` };
    while (!stopped) {
      try {
        const beat = await heartbeats.request({
          method: 'POST',
          path: `/api/nodes/${node.id}/heartbeat`,
          headers,
          body: JSON.stringify({ free_bytes: 10 ** 13 }),
        });
        const text = await beat.body.text();
        totals.heartbeats += 1;
        if (beat.statusCode !== 200) {
          fail(`heartbeat ${beat.statusCode}`, text);
          await sleep(100);
          continue;
        }
        const audits = (JSON.parse(text) as { audits: OfferedAudit[] }).audits;
        for (const item of audits) totals.itemBytes += Buffer.byteLength(JSON.stringify(item));
        totals.items += audits.length;
        if (audits.length === 0) {
          if (options.idleMs === undefined) return;
          await sleep(options.idleMs);
          continue;
        }
        totals.heartbeatsWithAudits += 1;
        for (const item of audits) {
          if (stopped) return;
          const answer = await answers.request({
            method: 'POST',
            path: item.url,
            headers,
            body: JSON.stringify(answerFor(item, options.shapeOf(item.asset_id))),
          });
          const body = await answer.body.text();
          if (answer.statusCode !== 200) {
            fail(`answer ${answer.statusCode}`, body);
            continue;
          }
          totals.answered += 1;
          answeredAt.push(performance.now());
          if ((JSON.parse(body) as { verdict: string }).verdict === 'passed') totals.passed += 1;
          else totals.failed += 1;
        }
      } catch (error) {
        // Requests cut by stop() are not failures of the server.
        if (stopped) return;
        fail((error as { code?: string }).code ?? 'exception', (error as Error).message);
        await sleep(100);
      }
    }
  };
  const done = Promise.all(options.nodes.map(holder)).then(() => undefined);
  const read = () => ({ ...totals, heartbeatWire: wireOf(heartbeatSockets), answerWire: wireOf(answerSockets) });
  return {
    totals: read,
    answeredAt,
    done,
    stop: async () => {
      stopped = true;
      // A server that stopped answering must not hold the run: requests still waiting after the grace are cut.
      const ended = await Promise.race([done.then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
      const final = read();
      await Promise.all(clients.map((client) => (ended ? client.close() : client.destroy()).catch(() => undefined)));
      await done;
      return final;
    },
  };
}
