import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isHttpUrl } from '../src/http/validation.js';
import { createTestDatabase, dialects, type DialectName, type TestDatabase } from './databases.js';
import { makeAssets, registerNode, startTestServer, type TestServer } from './server.js';

// Every route of the OpenAPI document gets the same hostile values in each of its fields, on every
// database: no answer is a 5xx, every refusal says why, and both databases answer alike.

type Schema = Record<string, any>;
type Where = 'body' | 'query' | 'path';
type Pointer = (string | number)[];

interface Hostile {
  name: string;
  value: unknown;
  /** How it is written in a URL, percent-encoded; absent: not sent in a URL (a JSON-only shape). */
  url?: string;
}

const HOSTILE: Hostile[] = [
  { name: 'NUL inside a string', value: 'hostile\u0000value', url: 'hostile%00value' },
  { name: 'a lone NUL', value: '\u0000', url: '%00' },
  { name: 'a huge string', value: 'x'.repeat(200_000), url: 'x'.repeat(6_000) },
  { name: 'a lone surrogate', value: '\ud800', url: '%ED%A0%80' },
  { name: 'digits where a number goes', value: '12' },
  { name: 'words where a number goes', value: 'many', url: 'many' },
  { name: '2^63', value: 2 ** 63, url: '9223372036854775808' },
  { name: '2^64', value: 2 ** 64, url: '18446744073709551616' },
  { name: '1e300', value: 1e300, url: '1e300' },
  { name: 'a negative id', value: -1, url: '-1' },
  { name: 'a float where an integer goes', value: 1.5, url: '1.5' },
  { name: 'an object', value: { $gt: '' } },
  { name: 'a list', value: ['hostile'] },
];

/** Whole bodies, for every route that takes one. */
const HOSTILE_BODIES: { name: string; raw: (baseline: unknown) => string }[] = [
  { name: 'an undeclared field', raw: (baseline) => JSON.stringify(withExtraField(baseline, 'not_a_field', 1)) },
  { name: 'NUL in a field name', raw: (baseline) => JSON.stringify(withExtraField(baseline, 'not\u0000a_field', 1)) },
  { name: 'a string with NUL for a body', raw: () => JSON.stringify('\u0000') },
  { name: 'lists nested 10,000 deep', raw: () => '['.repeat(10_000) + ']'.repeat(10_000) },
];

const NODE = 'hostile-node';
const ASSET = 'held-1';
const MISSING_ID = '999999';

/** Valid values by field name, where the type alone says too little. */
const NAMED: Record<string, unknown> = {
  node_id: NODE,
  node: NODE,
  hostname: 'hostile-host',
  asset_id: ASSET,
  asset: ASSET,
  sha256: 'a'.repeat(64),
  username: 'hostile-user',
  password: 'hostile-password',
  url: 'https://data.example.org/hostile.csv',
  start_time: '2030-01-01T00:00:00Z',
  end_time: '2030-01-01T01:00:00Z',
};

/** Bodies the generator cannot guess (a new asset rather than a change to a held one; an import that fails fast). */
const BODIES: Record<string, unknown> = {
  'POST /assets': makeAssets(1, {}, 'hostile'),
  'POST /auth/login': { username: 'admin', password: 'not-the-password' },
  'POST /allocate': { node_id: NODE, free_space_gb: 1 },
  'POST /imports': { source: 'dcat', url: 'http://127.0.0.1:9/data.json' },
};

/** Path parameters: ids that exist where the route reads one, ids that do not where it would end one. */
const PATHS: Record<string, (ids: { schedule: number }) => string> = {
  '/api/nodes/{id}': () => NODE,
  '/assets/{id}': () => ASSET,
  '/schedules/{id}': ({ schedule }) => String(schedule),
};

// A valid request may find no capacity (no worker is registered here): that 503 is an answer, not a crash.
const CAPACITY_CODES = new Set(['NOT_ENOUGH_WORKERS']);

// A node re-registering under the baseline's name would rotate its own token mid-run.
const NOT_AS_NODE = new Set(['POST /api/workers/register']);

interface Operation {
  key: string;
  method: string;
  path: string;
  body?: Schema;
  bodyRequired: boolean;
  parameters: { in: Where; name: string; schema: Schema }[];
}

function operationsOf(document: Schema): Operation[] {
  return Object.entries(document.paths as Record<string, Record<string, Schema>>).flatMap(([path, operations]) =>
    Object.entries(operations).map(([method, operation]) => ({
      key: `${method.toUpperCase()} ${path}`,
      method: method.toUpperCase(),
      path,
      body: operation.requestBody?.content?.['application/json']?.schema,
      bodyRequired: operation.requestBody?.required === true,
      parameters: (operation.parameters ?? []).map((parameter: Schema) => ({ in: parameter.in, name: parameter.name, schema: parameter.schema })),
    })),
  );
}

function sampleOf(schema: Schema, name: string): unknown {
  if (name in NAMED) return NAMED[name];
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (Array.isArray(schema.anyOf)) return sampleOf(schema.anyOf[0], name);
  if (schema.type === 'object') return Object.fromEntries((schema.required ?? []).map((key: string) => [key, sampleOf(schema.properties[key], key)]));
  if (schema.type === 'array') return [sampleOf(schema.items, name)];
  if (schema.type === 'integer' || schema.type === 'number') return Math.max(schema.minimum ?? 1, 1);
  if (schema.type === 'boolean') return false;
  return 'x'.repeat(Math.max(1, schema.minLength ?? 1));
}

/** Every scalar field of a body schema, with the schemas of the containers on its way. */
function fieldsOf(schema: Schema, pointer: Pointer = [], path: Schema[] = []): { pointer: Pointer; schema: Schema; path: Schema[] }[] {
  const objectBranch = schema.type === 'object' ? schema : (schema.anyOf ?? []).find((branch: Schema) => branch.type === 'object');
  if (objectBranch?.properties) {
    return Object.entries(objectBranch.properties as Record<string, Schema>).flatMap(([key, child]) =>
      fieldsOf(child, [...pointer, key], [...path, objectBranch]),
    );
  }
  if (objectBranch && typeof objectBranch.additionalProperties === 'object') {
    return fieldsOf(objectBranch.additionalProperties, [...pointer, 'region'], [...path, objectBranch]);
  }
  if (schema.type === 'array') return fieldsOf(schema.items, [...pointer, 0], [...path, schema]);
  return [{ pointer, schema, path }];
}

function withValue(baseline: unknown, field: { pointer: Pointer; path: Schema[] }, value: unknown): unknown {
  const root = structuredClone(baseline);
  let container = root as any;
  field.pointer.forEach((step, index) => {
    if (index === field.pointer.length - 1) {
      container[step] = value;
      return;
    }
    const next = field.path[index + 1] ?? {};
    container[step] ??= next.type === 'array' ? [] : sampleOf(next, String(step));
    container = container[step];
  });
  return root;
}

function withExtraField(baseline: unknown, name: string, value: unknown): unknown {
  if (Array.isArray(baseline)) return baseline.map((item) => ({ ...item, [name]: value }));
  return { ...(baseline as object), [name]: value };
}

// What the document says each field accepts, checked apart from the server.
const documented = { body: new Ajv({ strict: false, allErrors: false }), url: new Ajv({ strict: false, coerceTypes: true }) };
for (const ajv of Object.values(documented)) {
  addFormats.default(ajv);
  ajv.addFormat('http-url', { type: 'string', validate: isHttpUrl });
}
function documentRefuses(schema: Schema, value: unknown, where: Where): boolean {
  // The rule every string follows, whatever its schema: both databases must store it alike.
  if (typeof value === 'string' && (value.includes('\u0000') || /\p{Cs}/u.test(value))) return true;
  return !(where === 'body' ? documented.body : documented.url).validate(schema, structuredClone(value));
}

/** A URL value as the server reads it; undefined when it is no valid UTF-8 (what the server must do is then unsaid). */
function decoded(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** Each database's status for each request, compared once both have run. */
const statuses: Partial<Record<DialectName, Map<string, number>>> = {};

interface Answer {
  status: number;
  body: any;
}

describe.each(dialects)('hostile values on %s', (dialect) => {
  let database: TestDatabase;
  let server: TestServer;
  let operations: Operation[];
  const tokens: Record<'admin' | 'node', string> = { admin: '', node: '' };
  const ids = { schedule: 0 };

  async function send(method: string, url: string, who: 'admin' | 'node', payload?: string, contentType = 'application/json'): Promise<Answer> {
    const headers: Record<string, string> = { authorization: `Bearer ${tokens[who]}` };
    if (payload !== undefined) headers['content-type'] = contentType;
    const response = await server.app.inject({ method: method as 'GET', url, headers, ...(payload !== undefined ? { payload } : {}) });
    let body: unknown = response.body;
    try {
      body = JSON.parse(response.body);
    } catch {
      // Not JSON: the assertions say so.
    }
    return { status: response.statusCode, body };
  }

  function urlOf(operation: Operation, values: Record<string, string> = {}, query = ''): string {
    const path = operation.path.replace(/\{(\w+)\}/g, (_match, name: string) => {
      const fallback = Object.entries(PATHS).find(([prefix]) => operation.path.startsWith(prefix))?.[1](ids) ?? MISSING_ID;
      return values[name] ?? encodeURIComponent(operation.method === 'DELETE' ? MISSING_ID : fallback);
    });
    return query === '' ? path : `${path}?${query}`;
  }

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    server = await startTestServer(database, { nodeRateLimitPerMinute: 1_000_000, loginRateLimitPerMinute: 1_000_000, logLevel: 'error' });
    tokens.admin = server.adminToken;
    tokens.node = (await registerNode(server, NODE)).token;
    await server.api.post('/assets', makeAssets(2, { size_bytes: 10, size_mb: undefined }, 'held'), server.adminToken);
    await server.api.post('/allocate', { free_space_gb: 1, node_id: NODE }, tokens.node);
    ids.schedule = (
      await server.api.post('/schedules', { name: 'hostile', start_time: NAMED.start_time, end_time: NAMED.end_time }, server.adminToken)
    ).body.id;
    operations = operationsOf((await server.api.get('/openapi.json')).body);
  });
  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  });

  it('treats an empty body as no body on routes whose body is optional, whatever its Content-Type', async () => {
    const writes = operations.filter((operation) => ['POST', 'PATCH', 'DELETE'].includes(operation.method));
    expect(writes.filter((operation) => !operation.bodyRequired).map((operation) => operation.key)).toEqual(
      expect.arrayContaining(['POST /api/release/{id}', 'POST /api/enrollment-tokens', 'POST /api/nodes/{id}/drain', 'POST /api/nodes/{id}/offline']),
    );
    for (const operation of writes) {
      const bare = await send(operation.method, urlOf(operation), 'admin');
      for (const type of ['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded']) {
        const empty = await send(operation.method, urlOf(operation), 'admin', '', type);
        const label = `${operation.key} with an empty ${type} body`;
        if (operation.bodyRequired) {
          expect({ label, status: empty.status, detail: empty.body.detail }).toEqual({
            label,
            status: 422,
            detail: expect.stringMatching(/^body must be (object|array)$/),
          });
        } else {
          expect({ label, status: empty.status }).toEqual({ label, status: bare.status });
          expect(empty.status, label).not.toBe(400);
        }
      }
    }
  });

  it('answers every hostile value with a 4xx that says why, and never a 5xx', async () => {
    const answers = new Map<string, number>();
    const problems: string[] = [];
    const check = (label: string, answer: Answer, mustRefuse: boolean) => {
      answers.set(label, answer.status);
      const capacity = answer.status === 503 && CAPACITY_CODES.has(answer.body?.code) && !mustRefuse;
      if (answer.status >= 500 && !capacity) problems.push(`${label}: ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`);
      else if (mustRefuse && answer.status < 400) problems.push(`${label}: accepted (${answer.status}) what the document refuses`);
      if (answer.status >= 400 && !(typeof answer.body?.detail === 'string' && answer.body.detail.length > 5)) problems.push(`${label}: no JSON detail`);
    };

    for (const operation of operations) {
      const baseline = BODIES[operation.key] ?? (operation.body ? sampleOf(operation.body, '') : undefined);
      const payload = (body: unknown) => (body === undefined ? undefined : JSON.stringify(body));
      for (const who of ['admin', 'node'] as const) {
        const probe = await send(operation.method, urlOf(operation), who, payload(baseline));
        check(`${who} ${operation.key} baseline`, probe, false);
        // A route this caller may not use refuses before it reads the body: the caller who may use it is probed.
        if ((who === 'node' && NOT_AS_NODE.has(operation.key)) || probe.status === 401 || probe.status === 403) continue;
        // A baseline the schema refuses would hide what each hostile value does.
        if (probe.body?.code === 'VALIDATION_ERROR') problems.push(`${who} ${operation.key} baseline is refused: ${probe.body.detail}`);

        for (const field of operation.body ? fieldsOf(operation.body) : []) {
          for (const hostile of HOSTILE) {
            const answer = await send(operation.method, urlOf(operation), who, payload(withValue(baseline, field, hostile.value)));
            check(`${who} ${operation.key} body/${field.pointer.join('/')}: ${hostile.name}`, answer, documentRefuses(field.schema, hostile.value, 'body'));
          }
        }
        for (const wholeBody of operation.body ? HOSTILE_BODIES : []) {
          const answer = await send(operation.method, urlOf(operation), who, wholeBody.raw(baseline));
          const label = `${who} ${operation.key} body: ${wholeBody.name}`;
          check(label, answer, true);
          if (wholeBody.name === 'an undeclared field' && !(answer.status === 422 && String(answer.body.detail).includes('not_a_field'))) {
            problems.push(`${label}: ${answer.status} ${answer.body.detail} (expected a 422 naming not_a_field)`);
          }
        }
        for (const parameter of operation.parameters) {
          for (const hostile of HOSTILE.filter((each) => each.url !== undefined)) {
            const text = hostile.url as string;
            const url = parameter.in === 'path' ? urlOf(operation, { [parameter.name]: text }) : urlOf(operation, {}, `${parameter.name}=${text}`);
            const answer = await send(operation.method, url, who, payload(baseline));
            const value = decoded(text);
            check(
              `${who} ${operation.key} ${parameter.in}/${parameter.name}: ${hostile.name}`,
              answer,
              value !== undefined && documentRefuses(parameter.schema, value, parameter.in),
            );
          }
        }
      }
    }
    expect(problems).toEqual([]);
    statuses[dialect] = answers;
  }, 300_000);
});

describe.runIf(dialects.length > 1)('hostile values on every database', () => {
  it('get the same status on SQLite and on PostgreSQL', () => {
    const [sqlite, postgres] = [statuses.sqlite, statuses.postgres];
    expect(sqlite?.size).toBeGreaterThan(500);
    const differences = [...(sqlite ?? new Map<string, number>())]
      .filter(([label, status]) => postgres?.get(label) !== status)
      .map(([label, status]) => `${label}: sqlite ${status}, postgres ${postgres?.get(label)}`);
    expect(differences).toEqual([]);
    expect(postgres?.size).toBe(sqlite?.size);
  });
});
