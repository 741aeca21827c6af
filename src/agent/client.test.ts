import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError, createClient } from './client.js';

interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

let server: http.Server;
let baseUrl: string;
let received: Received[];
let answer: (request: Received) => { status: number; body: unknown };

beforeEach(async () => {
  received = [];
  server = http.createServer((request, response) => {
    const pieces: Buffer[] = [];
    request.on('data', (piece: Buffer) => pieces.push(piece));
    request.on('end', () => {
      const got = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: Buffer.concat(pieces) };
      received.push(got);
      const { status, body } = answer(got);
      response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const piecesOf = (...pieces: string[]) => Readable.from(pieces.map((piece) => Buffer.from(piece)));

describe('the agent client, sending a chunk of a transfer', () => {
  it('streams the body with its range, length and the node token', async () => {
    answer = () => ({ status: 200, body: { received: 7, done: false } });
    const client = createClient(baseUrl, () => 'node-token');
    const result = await client.sendChunk('/api/transfers/12', { start: 3, end: 9, size: 20 }, piecesOf('abc', 'defg'), new AbortController().signal);

    expect(result).toEqual({ received: 7, done: false });
    expect(received).toHaveLength(1);
    const [chunk] = received;
    expect(chunk).toMatchObject({ method: 'PUT', url: '/api/transfers/12' });
    expect(chunk!.headers).toMatchObject({
      authorization: 'Bearer node-token',
      'content-type': 'application/octet-stream',
      'content-range': 'bytes 3-9/20',
      'content-length': '7',
    });
    expect(chunk!.body.toString()).toBe('abcdefg');
  });

  it("throws the control plane's refusal with its code", async () => {
    answer = () => ({ status: 409, body: { detail: 'the requester is gone', code: 'TRANSFER_ENDED' } });
    const client = createClient(baseUrl, () => 'node-token');
    const sending = client.sendChunk('/api/transfers/12', { start: 0, end: 2, size: 3 }, piecesOf('abc'), new AbortController().signal);
    await expect(sending).rejects.toEqual(new ApiError(409, 'TRANSFER_ENDED', 'the requester is gone'));
  });

  it("never sends the node's token to another origin than the control plane's", async () => {
    answer = () => ({ status: 200, body: {} });
    const client = createClient(baseUrl, () => 'node-token');
    const sending = client.sendChunk('http://elsewhere.example/api/transfers/12', { start: 0, end: 2, size: 3 }, piecesOf('abc'), new AbortController().signal);
    await expect(sending).rejects.toThrow(/refusing to send this node's token/);
    expect(received).toEqual([]);
  });
});
