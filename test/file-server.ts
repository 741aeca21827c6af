import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The outside world the agents download from, on loopback. Paths:
 *   /files/<name>?size=N      N deterministic bytes (Range and If-Range supported, ETag set)
 *   /redirect/<name>?size=N   a 302 to /files/<name>?size=N
 *   /changing/<name>?size=N   different bytes on every request (a source that changes)
 *   /norange/<name>?size=N    N deterministic bytes, always whole (a server without Range support)
 *   /missing/<name>           404
 * and the hostile ones:
 *   /lying/<name>?size=N      N bytes, whatever the catalog says
 *   /endless/<name>           bytes without end, no Content-Length (counted in `sent`)
 *   /busy/<name>              429 with Retry-After: 30
 *   /bounce/<name>?to=URL     a 302 to URL (e.g. another host, or loopback)
 * `cut(name, bytes)` makes the next full transfer of <name> stop after that many bytes.
 */
export interface FileServer {
  url: string;
  /** Requests seen per path name, with their kind, Range and User-Agent headers. */
  requests: { kind: string; name: string; range: string | undefined; userAgent: string | undefined }[];
  /** Bytes sent so far per endless name. */
  sent: Map<string, number>;
  cut(name: string, afterBytes: number): void;
  close(): Promise<void>;
}

const BLOCK = 64 * 1024;

/** Block `index` of file `name`: one digest repeated, different for every block. */
function block(name: string, index: number): Buffer {
  const digest = crypto.createHash('sha256').update(`${name}:${index}`).digest();
  return Buffer.alloc(BLOCK, digest);
}

/** The bytes [start, end) of a generated file, as a stream of buffers. */
export function* contentOf(name: string, start: number, end: number): Generator<Buffer> {
  for (let offset = start; offset < end;) {
    const index = Math.floor(offset / BLOCK);
    const from = offset - index * BLOCK;
    const to = Math.min(BLOCK, end - index * BLOCK);
    yield block(name, index).subarray(from, to);
    offset = index * BLOCK + to;
  }
}

export function sha256Of(name: string, size: number): string {
  const hash = crypto.createHash('sha256');
  for (const chunk of contentOf(name, 0, size)) hash.update(chunk);
  return hash.digest('hex');
}

export async function startFileServer(options: { host?: string } = {}): Promise<FileServer> {
  const host = options.host ?? '127.0.0.1';
  const cuts = new Map<string, number>();
  const requests: FileServer['requests'] = [];
  const endlessSent = new Map<string, number>();
  let changes = 0;
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const [, kind = '', name = ''] = url.pathname.split('/');
    const size = Number(url.searchParams.get('size') ?? '0');
    requests.push({ kind, name, range: request.headers.range, userAgent: request.headers['user-agent'] });
    if (kind === 'missing') return response.writeHead(404).end('not found');
    if (kind === 'redirect') return response.writeHead(302, { location: `/files/${name}?size=${size}` }).end();
    if (kind === 'bounce') return response.writeHead(302, { location: url.searchParams.get('to') ?? '/' }).end();
    if (kind === 'busy') return response.writeHead(429, { 'retry-after': '30' }).end('slow down');
    if (kind === 'endless') return sendEndless(response, name, endlessSent);
    if (kind === 'lying') return response.writeHead(200, { 'content-length': size }).end(Buffer.concat([...contentOf(name, 0, size)]));
    if (kind !== 'files' && kind !== 'changing' && kind !== 'norange') return response.writeHead(404).end();
    const content = kind === 'changing' ? `${name}#${(changes += 1)}` : name;
    const etag = `"${crypto.createHash('sha1').update(content).digest('hex')}"`;
    let start = 0;
    let end = size;
    const range = kind === 'norange' ? null : /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
    const ifRange = request.headers['if-range'];
    if (range && (!ifRange || ifRange === etag)) {
      start = Number(range[1]);
      if (range[2] !== '') end = Math.min(size, Number(range[2]) + 1);
      if (start >= size) return response.writeHead(416, { 'content-range': `bytes */${size}` }).end();
      response.writeHead(206, { 'content-length': end - start, 'content-range': `bytes ${start}-${end - 1}/${size}`, etag, 'accept-ranges': 'bytes' });
    } else {
      response.writeHead(200, { 'content-length': size, etag, 'accept-ranges': 'bytes' });
    }
    const cutAfter = cuts.get(name);
    if (cutAfter !== undefined && start === 0) cuts.delete(name);
    let sent = 0;
    const chunks = contentOf(content, start, end);
    const pump = () => {
      for (let next = chunks.next(); !next.done; next = chunks.next()) {
        if (cutAfter !== undefined && start === 0 && sent + next.value.length > cutAfter) {
          response.write(next.value.subarray(0, cutAfter - sent));
          // Let the bytes go out, then drop the connection mid-transfer.
          setTimeout(() => response.socket?.destroy(), 50);
          return;
        }
        sent += next.value.length;
        if (!response.write(next.value)) return void response.once('drain', pump);
      }
      response.end();
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    url: `http://${host}:${(server.address() as AddressInfo).port}`,
    requests,
    sent: endlessSent,
    cut: (name, afterBytes) => void cuts.set(name, afterBytes),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A body that never ends, written as fast as the client reads it, until the client goes away. */
function sendEndless(response: http.ServerResponse, name: string, sent: Map<string, number>): void {
  response.writeHead(200, { 'content-type': 'application/octet-stream' });
  const chunk = block(name, 0);
  const pump = () => {
    while (!response.destroyed) {
      sent.set(name, (sent.get(name) ?? 0) + chunk.length);
      if (!response.write(chunk)) return void response.once('drain', pump);
    }
  };
  response.on('close', () => response.destroy());
  pump();
}
