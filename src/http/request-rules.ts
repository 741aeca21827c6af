import type { FastifyRequest, RouteOptions } from 'fastify';
import { AppError } from '../errors.js';
import type { ValidateFunction } from 'ajv';
import type { App } from './context.js';
import { validatorCompiler } from './validation.js';

/**
 * The largest integer a request may carry (ids, cursors, counts, sizes): exact as a JavaScript
 * number and inside PostgreSQL's bigint, so both databases see the same value or none.
 */
export const MAX_REQUEST_INTEGER = Number.MAX_SAFE_INTEGER;

type Schema = Record<string, unknown>;

const REQUEST_PARTS = ['body', 'querystring', 'params', 'headers'] as const;
const SUBSCHEMA = new Set(['items', 'additionalItems', 'additionalProperties', 'not', 'if', 'then', 'else', 'contains', 'propertyNames']);
const SUBSCHEMA_LISTS = new Set(['anyOf', 'oneOf', 'allOf', 'prefixItems']);
const SUBSCHEMA_MAPS = new Set(['properties', 'patternProperties', 'dependentSchemas', '$defs', 'definitions']);

/**
 * The rules every request follows, set once here rather than written into each schema (see also
 * validation.ts: no string the databases would store differently, no undeclared field):
 * - every integer lies within ±MAX_REQUEST_INTEGER;
 * - a property with a default is not required (ajv fills it in);
 * - a string declared by a `^https?://` pattern must also parse as a URL (format `http-url`);
 * - a body that requires no property may be left out: it is then `{}`;
 * - an empty body is no body, whatever its Content-Type says.
 * The OpenAPI document is built from the rewritten schemas, so it shows these rules.
 */
export function installRequestRules(app: App): void {
  app.addHook('onRoute', applyRequestRules);
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) =>
    isBlank(body as string) ? done(null, undefined) : parseJson(request, body as string, done),
  );
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, (_request, body, done) => done(null, isBlank(body as string) ? undefined : body));
  // Any other media type is refused, unless there is nothing to read.
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) =>
    (body as Buffer).length === 0 ? done(null, undefined) : done(unsupportedMediaType(request), undefined),
  );
}

/** Rewrites a route's request schemas (see installRequestRules); an `onRoute` hook. */
export function applyRequestRules(route: RouteOptions): void {
  const schema = route.schema as Schema | undefined;
  if (!schema) return;
  const rewritten: Schema = { ...schema };
  for (const part of REQUEST_PARTS) if (schema[part] !== undefined) rewritten[part] = normalized(schema[part]);
  route.schema = rewritten;
  if (isOptionalBody(rewritten.body)) {
    const own = route.preValidation === undefined ? [] : [route.preValidation].flat();
    route.preValidation = [treatAbsentBodyAsEmpty, ...own] as RouteOptions['preValidation'];
  }
}

/**
 * A request body's validator outside a route (`dispatcher import json` reads the same format as
 * POST /assets): the same rewritten schema and the same compiler, so both refuse the same input.
 */
export function compileBodyValidator(schema: object): ValidateFunction {
  return validatorCompiler({ schema: normalized(schema) as object, httpPart: 'body', method: 'POST', url: '' }) as ValidateFunction;
}

/** For the OpenAPI document: a body that requires no property is optional (@fastify/swagger marks every body required). */
export function markOptionalBodies<T>(document: T): T {
  const paths = (
    document as { paths?: Record<string, Record<string, { requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> } }>> }
  ).paths;
  for (const operations of Object.values(paths ?? {})) {
    for (const operation of Object.values(operations)) {
      const body = operation.requestBody;
      if (body && Object.values(body.content ?? {}).every((media) => isOptionalBody(media.schema))) body.required = false;
    }
  }
  return document;
}

function isOptionalBody(schema: unknown): boolean {
  return isSchema(schema) && schema.type === 'object' && !(Array.isArray(schema.required) && schema.required.length > 0);
}

async function treatAbsentBodyAsEmpty(request: FastifyRequest): Promise<void> {
  if (request.body === undefined) request.body = {};
}

// Shared schemas (a node reference, a page size) are rewritten once: the same input gives the same
// output object, which ajv compiles once.
const rewrittenSchemas = new WeakMap<object, unknown>();

function normalized(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(normalized);
  if (!isSchema(node)) return node;
  const known = rewrittenSchemas.get(node);
  if (known !== undefined) return known;
  // Own string keys only: TypeBox's symbol-keyed markers mean nothing to ajv or OpenAPI.
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    if (SUBSCHEMA.has(key) || SUBSCHEMA_LISTS.has(key)) out[key] = normalized(value);
    else if (SUBSCHEMA_MAPS.has(key) && isSchema(value)) out[key] = Object.fromEntries(Object.entries(value).map(([name, entry]) => [name, normalized(entry)]));
    else out[key] = value;
  }
  if (out.type === 'integer') {
    out.maximum = Math.min(typeof out.maximum === 'number' ? out.maximum : MAX_REQUEST_INTEGER, MAX_REQUEST_INTEGER);
    out.minimum = Math.max(typeof out.minimum === 'number' ? out.minimum : -MAX_REQUEST_INTEGER, -MAX_REQUEST_INTEGER);
  }
  if (out.type === 'string' && typeof out.pattern === 'string' && out.pattern.startsWith('^https?://') && out.format === undefined) out.format = 'http-url';
  if (Array.isArray(out.required) && isSchema(out.properties)) {
    const properties = out.properties;
    const required = (out.required as string[]).filter((name) => !isSchema(properties[name]) || properties[name].default === undefined);
    if (required.length > 0) out.required = required;
    else delete out.required;
  }
  rewrittenSchemas.set(node, out);
  return out;
}

function isSchema(value: unknown): value is Schema {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

const isBlank = (body: string) => /^[ \t\r\n]*$/.test(body);

function unsupportedMediaType(request: FastifyRequest): AppError {
  const type = (request.headers['content-type'] ?? 'unknown').slice(0, 100);
  return new AppError('UNSUPPORTED_MEDIA_TYPE', `A body of type "${type}" is not accepted: send JSON (Content-Type: application/json).`);
}

/**
 * A node named in a path or a query string: digits are its id, anything else its name. Digits
 * beyond MAX_REQUEST_INTEGER are refused here with a 422 naming the field (`params/id`).
 */
export function parseNodeRef(raw: string, field: string): string | number {
  if (!/^\d+$/.test(raw)) return raw;
  const id = Number(raw);
  if (Number.isSafeInteger(id)) return id;
  const message = `must be at most ${MAX_REQUEST_INTEGER}`;
  throw new AppError('VALIDATION_ERROR', `${field} ${message}`, { fields: [{ field, message }] });
}
