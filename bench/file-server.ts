/**
 * The restore suite's source and its direct download: a plain Node HTTP server (no framework) that
 * serves one file from disk at `/file` with Content-Length and one Range, read in 1 MiB pieces and
 * piped to the socket, as fast as Node serves a file. The bench starts it as a child
 * (`startFileServer`) with `BENCH_FILE` and `PORT`.
 */
import fs from 'node:fs';
import http from 'node:http';
import { pipeline } from 'node:stream';

/** Large reads: fewer, bigger socket writes than the 64 KiB default. */
const READ_BYTES = 1024 * 1024;

const file = process.env.BENCH_FILE ?? '';
const port = Number(process.env.PORT ?? 0);
const size = fs.statSync(file).size;

/** The one range of a `Range: bytes=a-b` header (`a-`, `-n` too), `undefined` without one, `null` when it cannot be served. */
function parseRange(header: string | undefined): { start: number; end: number } | undefined | null {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return null;
  const [first, last] = [match[1] as string, match[2] as string];
  const start = first === '' ? Math.max(0, size - Number(last)) : Number(first);
  const end = first === '' || last === '' ? size - 1 : Math.min(size - 1, Number(last));
  return start <= end && start < size ? { start, end } : null;
}

const server = http.createServer((request, response) => {
  if (request.url === '/health') return void response.end('ok');
  if (request.url !== '/file') return void response.writeHead(404).end();
  if (request.method !== 'GET' && request.method !== 'HEAD') return void response.writeHead(405).end();
  const range = parseRange(request.headers.range);
  if (range === null) return void response.writeHead(416, { 'content-range': `bytes */${size}` }).end();
  const { start, end } = range ?? { start: 0, end: size - 1 };
  response.writeHead(range ? 206 : 200, {
    'content-type': 'application/octet-stream',
    'content-length': String(end - start + 1),
    'accept-ranges': 'bytes',
    ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
  });
  if (request.method === 'HEAD' || size === 0) return void response.end();
  // A client that goes away ends the read; there is nothing else to clean up.
  pipeline(fs.createReadStream(file, { start, end, highWaterMark: READ_BYTES }), response, () => undefined);
});

server.listen(port, '127.0.0.1');
process.once('SIGTERM', () => server.close(() => process.exit(0)));
