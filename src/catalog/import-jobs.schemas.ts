import { Type, type Static } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import { Limit, Nullable } from '../http/schemas.js';
import { describeValidationErrors } from '../http/validation.js';

const kinds = ['ckan', 'datagov', 'dcat'] as const;
const states = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;

const PageSize = (what: string) => Type.Integer({ minimum: 1, maximum: 1000, description: `${what} per page, 1–1000 (default 1000).` });

/** `POST /imports` and each entry of CATALOG_SYNC_SOURCES: the CLI's options, by their JSON names. */
export const ImportRequest = Type.Object(
  {
    source: Type.Unsafe<(typeof kinds)[number]>({ type: 'string', enum: [...kinds], description: 'ckan, datagov or dcat.' }),
    url: Type.Optional(
      Type.String({
        maxLength: 2048,
        pattern: '^https?://[^\\s/]+\\S*$',
        description: 'http(s) URL: the CKAN portal, the data.gov API (default DATAGOV_API_URL) or the data.json.',
      }),
    ),
    q: Type.Optional(Type.String({ minLength: 1, maxLength: 1000, description: 'ckan, datagov: search text.' })),
    fq: Type.Optional(Type.String({ minLength: 1, maxLength: 1000, description: 'ckan: Solr filter query.' })),
    org: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'ckan, datagov: only this organization.' })),
    rows: Type.Optional(PageSize('ckan: datasets')),
    per_page: Type.Optional(PageSize('datagov: datasets')),
    api_key: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'datagov: X-Api-Key (default DATAGOV_API_KEY); never shown back.' })),
    discover_sizes: Type.Optional(Type.Boolean({ description: 'After the pages, find unknown sizes with HEAD (else a ranged GET).' })),
  },
  { additionalProperties: false },
);
export type ImportRequest = Static<typeof ImportRequest>;

const optionsOf: Record<ImportRequest['source'], (keyof ImportRequest)[]> = {
  ckan: ['q', 'fq', 'org', 'rows'],
  datagov: ['q', 'org', 'per_page', 'api_key'],
  dcat: [],
};

/** What the schema cannot say: which options each source takes, and which need a URL. Throws an Error saying which. */
export function checkImportRequest(request: ImportRequest): void {
  const allowed = new Set<string>(['source', 'url', 'discover_sizes', ...optionsOf[request.source]]);
  const foreign = Object.keys(request).filter((key) => !allowed.has(key) && request[key as keyof ImportRequest] !== undefined);
  if (foreign.length > 0) {
    throw new Error(
      `${foreign.join(', ')} ${foreign.length === 1 ? 'is not an option' : 'are not options'} of ${request.source} imports (they take ${[...allowed].join(', ')})`,
    );
  }
  if (request.source !== 'datagov' && request.url === undefined) throw new Error(`a ${request.source} import needs a url`);
}

// Unlike a request body, a configured list is not trimmed of unknown keys: a misspelt option is an error.
const validateSyncSources = new Ajv({ allErrors: true, strict: false }).compile(Type.Array(ImportRequest, { minItems: 1, maxItems: 100 }));

/** CATALOG_SYNC_SOURCES: a JSON list of `POST /imports` bodies. Throws an Error naming every problem. */
export function parseSyncSources(raw: string): ImportRequest[] {
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch (error) {
    throw new Error(`must be a JSON list of imports like [{"source":"ckan","url":"https://…"}]: ${(error as Error).message}`, { cause: error });
  }
  if (!validateSyncSources(list)) throw new Error(`has invalid imports: ${describeValidationErrors('', validateSyncSources.errors ?? []).detail.trim()}`);
  const problems = (list as ImportRequest[]).flatMap((request, index) => {
    try {
      checkImportRequest(request);
      return [];
    } catch (error) {
      return [`/${index}: ${(error as Error).message}`];
    }
  });
  if (problems.length > 0) throw new Error(`has invalid imports: ${problems.join('; ')}`);
  return list as ImportRequest[];
}

export const ImportSizes = Type.Object({
  checked: Type.Integer(),
  discovered: Type.Integer(),
  gone: Type.Integer({ description: 'Files that answered 404/410.' }),
  unknown: Type.Integer(),
});

export const ImportJobView = Type.Object({
  id: Type.Integer(),
  source: Type.String({ description: 'ckan, datagov or dcat.' }),
  url: Type.String({ description: 'The normalized portal or data.json URL; assets record it as their source.' }),
  options: Type.Object({
    q: Type.Optional(Type.String()),
    fq: Type.Optional(Type.String()),
    org: Type.Optional(Type.String()),
    rows: Type.Optional(Type.Integer()),
    per_page: Type.Optional(Type.Integer()),
    api_key_set: Type.Optional(Type.Boolean()),
    discover_sizes: Type.Optional(Type.Boolean()),
  }),
  state: Type.String({ description: states.join(', ') }),
  created_by: Type.String(),
  created_at: Type.String(),
  started_at: Nullable(Type.String()),
  finished_at: Nullable(Type.String()),
  updated_at: Nullable(Type.String({ description: 'Last page written or lease renewed.' })),
  attempts: Type.Integer({ description: 'Times an instance took the job up (resumes included).' }),
  pages_done: Type.Integer(),
  datasets_seen: Type.Integer(),
  datasets_total: Nullable(Type.Integer({ description: 'As the portal counts them (CKAN, DCAT); null for data.gov.' })),
  resources_seen: Type.Integer(),
  assets_created: Type.Integer(),
  assets_updated: Type.Integer(),
  assets_unchanged: Type.Integer(),
  duplicates: Type.Integer({ description: 'Resources whose URL another resource already brought: linked, not added.' }),
  removed_from_source: Nullable(Type.Integer({ description: 'Assets flagged removed after the last page; null until then.' })),
  sizes: Nullable(ImportSizes),
  resources_per_second: Nullable(Type.Number({ description: 'Resources seen per second since the job started.' })),
  errors: Type.Integer({ description: 'Attempts that ended in an error.' }),
  last_error: Nullable(Type.String()),
});
export type ImportJobView = Static<typeof ImportJobView>;

export const ImportId = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) }, { additionalProperties: false });

export const ImportQuery = Type.Object(
  {
    state: Type.Optional(Type.Unsafe<(typeof states)[number]>({ type: 'string', enum: [...states] })),
    cursor: Type.Optional(Type.Integer({ minimum: 1, description: 'next_cursor of the previous page.' })),
    limit: Limit(50, 500),
  },
  { additionalProperties: false },
);
