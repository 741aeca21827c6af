import type { RouteOptions } from 'fastify';
import { describe, expect, it } from 'vitest';
import { applyRequestRules, MAX_REQUEST_INTEGER, parseNodeRef } from './request-rules.js';
import { findUnstorableStrings, isHttpUrl } from './validation.js';

const routeWith = (schema: Record<string, unknown>) => ({ method: 'POST', url: '/x', handler: () => undefined, schema }) as unknown as RouteOptions;

describe('the request rules', () => {
  it('bound every integer, keep declared bounds inside, and leave the input schema alone', () => {
    const id = { type: 'integer', minimum: 1 };
    const body = { type: 'object', properties: { id, list: { type: 'array', items: { anyOf: [{ type: 'string' }, { type: 'integer', maximum: 2 ** 60 }] } } } };
    const route = routeWith({ body });
    applyRequestRules(route);
    const rewritten = (route.schema as { body: any }).body;
    expect(rewritten.properties.id).toEqual({ type: 'integer', minimum: 1, maximum: MAX_REQUEST_INTEGER });
    expect(rewritten.properties.list.items.anyOf[1]).toEqual({ type: 'integer', minimum: -MAX_REQUEST_INTEGER, maximum: MAX_REQUEST_INTEGER });
    expect(id).toEqual({ type: 'integer', minimum: 1 });
  });

  it('rewrite a schema shared by routes once, into one object', () => {
    const params = { type: 'object', properties: { id: { type: 'integer' } } };
    const [first, second] = [routeWith({ params }), routeWith({ params })];
    applyRequestRules(first);
    applyRequestRules(second);
    expect((first.schema as { params: unknown }).params).toBe((second.schema as { params: unknown }).params);
  });

  it('do not require a property that has a default, and parse http(s) patterns as URLs', () => {
    const route = routeWith({
      querystring: {
        type: 'object',
        required: ['limit', 'state'],
        properties: { limit: { type: 'integer', default: 100 }, state: { type: 'string', pattern: '^https?://\\S+$' } },
      },
    });
    applyRequestRules(route);
    const query = (route.schema as { querystring: any }).querystring;
    expect(query.required).toEqual(['state']);
    expect(query.properties.state.format).toBe('http-url');
  });

  it('give a route whose body requires nothing an empty body when it has none', () => {
    const optional = routeWith({ body: { type: 'object', properties: { note: { type: 'string' } } } });
    const required = routeWith({ body: { type: 'object', required: ['note'], properties: { note: { type: 'string' } } } });
    applyRequestRules(optional);
    applyRequestRules(required);
    expect([optional.preValidation].flat()).toHaveLength(1);
    expect(required.preValidation).toBeUndefined();
  });

  it('parse node references: digits are ids up to the bound, anything else a name', () => {
    expect(parseNodeRef('42', 'params/id')).toBe(42);
    expect(parseNodeRef('node-7', 'params/id')).toBe('node-7');
    expect(parseNodeRef(String(MAX_REQUEST_INTEGER), 'params/id')).toBe(MAX_REQUEST_INTEGER);
    expect(() => parseNodeRef('9007199254740992', 'params/id')).toThrow(`params/id must be at most ${MAX_REQUEST_INTEGER}`);
  });
});

describe('the strings a request may hold', () => {
  it.each([
    ['a NUL in a value', { a: ['ok', 'x\u0000'] }, '/a/1', 'must not contain a NUL character (\\u0000)'],
    ['a NUL in a name', { 'k\u0000': 1 }, '/k\\u0000', 'must not contain a NUL character (\\u0000) in its name'],
    ['a lone surrogate', { a: { b: '\ud800' } }, '/a/b', 'must be well-formed Unicode (it holds a lone surrogate)'],
  ])('refuse %s, naming where', (_name, data, instancePath, message) => {
    expect(findUnstorableStrings(data)).toMatchObject([{ instancePath, message }]);
  });

  it('accept paired surrogates (emoji) and survive any nesting depth', () => {
    expect(findUnstorableStrings({ greeting: 'Hello rescuer 👋' })).toEqual([]);
    expect(findUnstorableStrings(JSON.parse('['.repeat(100_000) + ']'.repeat(100_000)))).toEqual([]);
  });

  it.each([
    ['https://data.example.org/a.csv', true],
    ['http://[::1]:8080/x', true],
    ['http://}l&]', false],
    ['ftp://example.org/file', false],
    ['http://', false],
  ])('take %s as an http(s) URL: %s', (url, expected) => {
    expect(isHttpUrl(url)).toBe(expected);
  });
});
