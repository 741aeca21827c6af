import { Client } from 'undici';
import type { BenchNode } from './api.js';
import { runLoops, type LoopResult, type Outcome, type WindowOptions } from './loops.js';

/** What one HTTP client sends, over and over, on its own keep-alive connection. */
export interface HttpTarget {
  baseUrl: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

/** The body every /allocate client sends; the Fastify hello-world clients send the same bytes. */
export function allocateBody(nodeName: string, maxAssets: number): string {
  return JSON.stringify({ free_space_gb: 1_000_000, node_id: nodeName, max_assets: maxAssets });
}

/** One /allocate client per node, spread round-robin over the server instances. */
export function allocateTargets(nodes: BenchNode[], baseUrls: string[], maxAssets: number): HttpTarget[] {
  return nodes.map((node, index) => ({
    baseUrl: baseUrls[index % baseUrls.length] as string,
    path: '/allocate',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${node.token}` },
    body: allocateBody(node.name, maxAssets),
  }));
}

/** A 200 counts its array's length as items (assets granted); any other status is a failed call. */
async function post(client: Client, target: HttpTarget): Promise<Outcome> {
  const response = await client.request({ method: 'POST', path: target.path, headers: target.headers, body: target.body });
  if (response.statusCode === 200) {
    const parsed = (await response.body.json()) as unknown;
    return { ok: true, status: '200', items: Array.isArray(parsed) ? parsed.length : 0 };
  }
  const text = await response.body.text();
  return { ok: false, status: String(response.statusCode), items: 0, errorBody: text };
}

/** One sequential client per target, each over one undici keep-alive connection (no pipelining). */
export async function runHttpLoad(targets: HttpTarget[], window: WindowOptions): Promise<LoopResult> {
  const clients = targets.map((target) => new Client(target.baseUrl, { keepAliveTimeout: 60_000, pipelining: 1 }));
  try {
    return await runLoops(
      targets.map((target, index) => () => post(clients[index] as Client, target)),
      window,
    );
  } finally {
    await Promise.all(clients.map((client) => client.close().catch(() => client.destroy())));
  }
}
