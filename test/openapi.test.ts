import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REQUEST_INTEGER } from '../src/http/request-rules.js';
import { createTestDatabase, dialects, type TestDatabase } from './databases.js';
import { makeAssets, registerNode, startTestServer, type TestServer } from './server.js';

type Schema = Record<string, any>;

/** Every operation of the document as `[key, operation]`, e.g. `['GET /assets', {…}]`. */
function operationsOf(document: Schema): [string, Schema][] {
  return Object.entries(document.paths as Record<string, Record<string, Schema>>).flatMap(([path, operations]) =>
    Object.entries(operations).map(([method, operation]): [string, Schema] => [`${method.toUpperCase()} ${path}`, operation]),
  );
}

/** Every integer schema under a request schema. */
function integersIn(schema: unknown): Schema[] {
  if (schema === null || typeof schema !== 'object') return [];
  const here = (schema as Schema).type === 'integer' ? [schema as Schema] : [];
  return [...here, ...Object.values(schema).flatMap(integersIn)];
}

describe.each(dialects)('the OpenAPI document on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let document: Schema;

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database);
    document = (await server.api.get('/openapi.json')).body;
  });
  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  });

  it('is valid OpenAPI 3.0.3 for an independent validator', async () => {
    expect(document.openapi).toBe('3.0.3');
    const result = await new Validator().validate(document);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('declares the media type each route serves', async () => {
    const plain = operationsOf(document).filter(([key, operation]) => key.startsWith('GET ') && !key.includes('{') && operation.responses['200']);
    expect(plain.length).toBeGreaterThan(10);
    for (const [key, operation] of plain) {
      const response = await server.api.get(key.slice('GET '.length), server.adminToken);
      const served = (response.headers.get('content-type') ?? '').split(';')[0];
      expect({ route: key, status: response.status }).toEqual({ route: key, status: 200 });
      expect({ route: key, served }).toEqual({ route: key, served: expect.toBeOneOf(Object.keys(operation.responses['200'].content ?? {})) });
    }
  });

  it('requires no parameter that has a default, and no body that requires nothing', () => {
    for (const [key, operation] of operationsOf(document)) {
      for (const parameter of operation.parameters ?? []) {
        if (parameter.schema?.default !== undefined)
          expect({ route: key, parameter: parameter.name, required: parameter.required }).toEqual({ route: key, parameter: parameter.name, required: false });
      }
      const body = operation.requestBody?.content?.['application/json']?.schema;
      if (body?.type === 'object' && !(body.required?.length > 0))
        expect({ route: key, bodyRequired: operation.requestBody.required }).toEqual({ route: key, bodyRequired: false });
    }
  });

  it('bounds every integer a request carries by what both databases hold', () => {
    for (const [key, operation] of operationsOf(document)) {
      const request = [operation.parameters ?? [], operation.requestBody ?? {}];
      for (const integer of integersIn(request)) {
        expect({ route: key, maximum: integer.maximum <= MAX_REQUEST_INTEGER, minimum: integer.minimum >= -MAX_REQUEST_INTEGER }).toEqual({
          route: key,
          maximum: true,
          minimum: true,
        });
      }
    }
  });

  it('refuses an undeclared body field by name, changing nothing', async () => {
    const node = await registerNode(server, 'typo-node');
    await server.api.post('/assets', makeAssets(1, {}, 'typo'), server.adminToken);
    const response = await server.api.post('/allocate', { free_space_gb: 10, node_id: 'typo-node', max_asset: 5 }, node.token);
    expect(response.status).toBe(422);
    expect(response.body).toMatchObject({
      code: 'VALIDATION_ERROR',
      detail: 'body/max_asset is not allowed',
      fields: [{ field: 'body/max_asset', message: 'is not allowed' }],
    });
    expect((await server.api.get('/allocations?node=typo-node', server.adminToken)).body.items).toEqual([]);
  });

  it('parses URL fields as URLs, not by a pattern alone', async () => {
    const urlFields = operationsOf(document).flatMap(([key, operation]) =>
      JSON.stringify(operation.requestBody ?? {}).includes('"format":"http-url"') ? [key] : [],
    );
    expect(urlFields).toEqual(['POST /assets', 'POST /imports']);
    const asset = await server.api.post('/assets', makeAssets(1, { url: 'http://}l&]' }, 'bad-url'), server.adminToken);
    expect(asset.status).toBe(422);
    expect(asset.body.detail).toBe('body/0/url must be an http(s) URL');
    const portal = await server.api.post('/imports', { source: 'dcat', url: 'http://}l&]/data.json' }, server.adminToken);
    expect(portal.status).toBe(422);
    expect(portal.body.detail).toBe('body/url must be an http(s) URL');
  });
});
