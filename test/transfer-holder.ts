import { expect } from 'vitest';
import type { TestServer } from './server.js';

/** A node as tests hold it: its id, name and token. */
export interface HolderNode {
  id: number;
  name: string;
  token: string;
}

/** A transfer as a node is asked to send it (GET /api/nodes/{id}/transfers). */
export interface TransferItem {
  id: number;
  asset_id: string;
  offset: number;
  length: number;
  size: number;
  sha256: string;
  url: string;
}

/** The one transfer a node is asked to send, waited for with its long-poll. */
export async function nextTransfer(server: TestServer, node: HolderNode): Promise<TransferItem> {
  const answer = await server.api.get(`/api/nodes/${node.id}/transfers?wait=10`, node.token);
  expect(answer.status).toBe(200);
  expect(answer.body.transfers).toHaveLength(1);
  return answer.body.transfers[0];
}

/** One chunk of a transfer: `bytes` of the copy from `start`, as an agent sends it. */
export function putChunk(server: TestServer, node: HolderNode, item: TransferItem, start: number, bytes: Buffer): Promise<Response> {
  return fetch(`${server.url}${item.url}`, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${node.token}`,
      'content-type': 'application/octet-stream',
      'content-range': `bytes ${start}-${start + bytes.length - 1}/${item.size}`,
    },
    body: new Uint8Array(bytes),
  });
}

/** Plays a holder's agent for one transfer: waits for it, then sends its whole range of `copy` in one chunk. */
export async function serveOneTransfer(server: TestServer, node: HolderNode, copy: Buffer): Promise<void> {
  const item = await nextTransfer(server, node);
  const answer = await putChunk(server, node, item, item.offset, copy.subarray(item.offset, item.offset + item.length));
  expect(answer.status).toBe(200);
}
