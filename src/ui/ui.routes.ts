import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Type } from '@sinclair/typebox';
import { AppError } from '../errors.js';
import type { App } from '../http/context.js';

/**
 * The dashboard's files. `npm run build` copies this folder to dist/ui/public, so the same
 * relative path works from src/ (tsx, tests) and from dist/ (node dist/cli.js).
 */
export const UI_DIRECTORY = fileURLToPath(new URL('./public/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

// Everything comes from this server: no CDN, no inline script, no framing.
const HEADERS = {
  'content-security-policy':
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

interface UiFile {
  body: Buffer;
  type: string;
}

/** Reads the dashboard once: only the files found here are served, so no path can escape the folder. */
export function loadUiFiles(directory = UI_DIRECTORY): Map<string, UiFile> {
  const files = new Map<string, UiFile>();
  for (const name of fs.readdirSync(directory)) {
    const type = CONTENT_TYPES[path.extname(name)];
    if (type) files.set(name, { body: fs.readFileSync(path.join(directory, name)), type });
  }
  if (!files.has('index.html')) throw new Error(`the dashboard is missing: no index.html in ${directory} (run npm run build)`);
  return files;
}

/** `GET /ui`: the dashboard, a client of the public API like any other (see README, Dashboard). */
export function registerUiRoutes(app: App, files = loadUiFiles()): void {
  const send = (name: string) => {
    const file = files.get(name);
    if (!file) throw new AppError('ROUTE_NOT_FOUND', `No dashboard file is named "${name}".`);
    return file;
  };
  for (const url of ['/ui', '/ui/']) {
    app.get(url, { schema: { hide: true } }, async (_request, reply) => {
      const file = send('index.html');
      return reply.headers(HEADERS).type(file.type).send(file.body);
    });
  }
  // Browsers ask for /favicon.ico on any page of the server (the API's too): the dashboard's icon, not a 404.
  app.get('/favicon.ico', { schema: { hide: true } }, async (_request, reply) => {
    const file = send('favicon.svg');
    return reply.headers(HEADERS).type(file.type).send(file.body);
  });
  app.get('/ui/:file', { schema: { hide: true, params: Type.Object({ file: Type.String({ maxLength: 100 }) }) } }, async (request, reply) => {
    const file = send(request.params.file);
    return reply.headers(HEADERS).type(file.type).send(file.body);
  });
}
