import path from 'node:path';
import { parseSyncSources, type ImportRequest } from './catalog/import-jobs.schemas.js';
import { parsePriorityRules, type PriorityRule } from './catalog/priority-rules.js';
import {
  boolean,
  databaseUrl,
  duration,
  HOUR,
  hoursToMs,
  httpUrl,
  identifier,
  integer,
  oneOf,
  password,
  positiveNumber,
  replicaRules,
  secret,
  text,
  trustedProxies,
  username,
} from './config-parsers.js';

/**
 * Every setting of `dispatcher serve`, read once from the environment by `loadConfig`.
 * Tests build a Config with `buildConfig({...})` and never touch `process.env`.
 */
export interface Config {
  host: string;
  port: number;
  /**
   * Whose X-Forwarded-For to believe for client addresses (rate limits, a worker's own address):
   * nobody (false), every hop (true), or only the listed proxy addresses and CIDRs.
   */
  trustProxy: boolean | string;
  /** `postgres://…` for PostgreSQL; undefined means embedded SQLite under `dataDirectory`. */
  databaseUrl: string | undefined;
  /** PostgreSQL schema for Dispatcher's tables (default: the server's search_path, normally `public`). */
  databaseSchema: string | undefined;
  databasePoolSize: number;
  /** After an /allocate batch, how long to wait for more requests; undefined: the database's default. */
  allocateBatchWaitMs: number | undefined;
  /** PostgreSQL: prepare recurring statements per connection; off behind a transaction-mode pooler. */
  preparedStatements: boolean;
  dataDirectory: string;
  logLevel: LogLevel;
  autoUpdateIntervalMs: number;
  allocationExpiryMs: number;
  priorityPolicy: PriorityPolicy;
  /** How long an untouched pending (or a rescued) asset waits before its priority moves by one. */
  priorityAgingMs: number;
  jwtSecret: string | undefined;
  /** A file holding the JWT secret, readable by the service alone; wins over jwtSecret. */
  jwtSecretFile: string | undefined;
  tokenTtlMs: number;
  adminUser: string;
  adminPassword: string | undefined;
  signup: 'open' | 'closed';
  nodeEnrollmentToken: string | undefined;
  /** Lifetime of an enrollment token created without expires_in_hours. */
  enrollmentTokenTtlMs: number;
  /** Bearer token that Prometheus sends to GET /metrics; undefined leaves /metrics open. */
  metricsToken: string | undefined;
  defaultReplicasTarget: number;
  unknownSizeEstimateBytes: number;
  unknownSizeMaxPerRequest: number;
  /** Replica targets by priority, highest threshold first: [[8, 3], [1, 2]] means priority ≥ 8 → 3. */
  replicasByPriority: [number, number][] | undefined;
  nodeTimeoutMs: number;
  nodeDeadGraceMs: number;
  reclaimMaxPerMinute: number;
  freeSpaceTtlMs: number;
  leaseMinMs: number;
  defaultNodeRateBytesPerSecond: number;
  maxStrikes: number;
  sourceGoneConfirmations: number;
  /** Distinct nodes whose size or checksum mismatches make an asset `suspect` (no longer handed out). */
  mismatchConfirmations: number;
  /** A failed node-asset pair waits this long before that node may get the asset again, doubling per failure… */
  retryCooldownMs: number;
  /** … up to this. */
  retryCooldownMaxMs: number;
  /** Active allocations per source host across the fleet; 0: no cap. */
  sourceHostMaxActive: number;
  /** A source's 429/503 pauses its host for its Retry-After, at most this long (and this long when it gives none: see sourcePauseDefaultMs). */
  sourcePauseMaxMs: number;
  sourcePauseDefaultMs: number;
  spreadTag: string;
  bodyLimitBytes: number;
  /** How long a client may take to send a whole request (408 after it); an idle connection is closed after twice that. */
  requestTimeoutMs: number;
  loginRateLimitPerMinute: number;
  /** Failed authentications per client address per minute before 429. */
  authFailuresPerMinute: number;
  /** Schedule and rental calls per user per minute. */
  userRateLimitPerMinute: number;
  nodeRateLimitPerMinute: number;
  /** Catalog import: requests per second to a portal, per-request timeout, retries on 429/5xx/timeouts. */
  catalogRequestsPerSecond: number;
  catalogTimeoutMs: number;
  /** The largest body one portal request may send; the fetch is streamed and stopped past it. */
  catalogMaxPageBytes: number;
  catalogMaxRetries: number;
  /** The longest wait a portal's Retry-After is granted (data.gov's hourly limit asks for up to an hour). */
  catalogMaxRetryWaitMs: number;
  /** Priority added to an asset that vanished from its portal (capped at 10). */
  catalogRemovedPriorityBoost: number;
  /** Initial priorities of imported assets by organization, keyword or format (CATALOG_PRIORITY_RULES). */
  catalogPriorityRules: PriorityRule[];
  /** HEAD requests in flight at once when import discovers unknown sizes (`--discover-sizes`). */
  catalogHeadConcurrency: number;
  /** The new catalog.data.gov API (not CKAN) and its key. */
  datagovApiUrl: string;
  datagovApiKey: string | undefined;
  /** Periodic re-sync: how often `catalogSyncSources` are imported again (undefined: never), and which. */
  catalogSyncIntervalMs: number | undefined;
  catalogSyncSources: ImportRequest[] | undefined;
  /** Worker leasing: the longest a rental may last (initial hours plus extensions) and the most workers per call. */
  rentMaxMs: number;
  rentMaxCount: number;
  /** Quotas per user (admins exempt): workers held at once, worker-hours per rolling week, a reserve schedule's span. */
  userMaxWorkers: number;
  userMaxWorkerHoursPerWeek: number;
  reserveMaxSpanMs: number;
  maxSchedulesPerUser: number;
  /** OpenSSH private key the control plane provisions workers with; unset: generated and kept in the database. */
  provisioningKeyFile: string | undefined;
  /** Connecting to a worker and running one command over SSH, and reading its banner when probing. */
  sshTimeoutMs: number;
  workerProbeIntervalMs: number;
  /** Consecutive failed probes after which a worker is dead (its rentals move). */
  workerProbeFailures: number;
  /** `admin`: a new worker is rentable only once an admin approves it; `auto`: once its host key is proven. */
  workerApproval: 'auto' | 'admin';
  /** Where a worker registered by its agent is reached: `connection` (the address it registered from) or `declared` (the `ip` it sends). */
  workerAddress: 'connection' | 'declared';
  /** Outbox: attempts of a side effect before giving up, and the first retry delay (doubling, at most 1 h). */
  taskMaxAttempts: number;
  taskRetryBaseMs: number;
  /** Who may restore a copy with GET /assets/{id}/content. */
  restoreAccess: 'users' | 'admins' | 'public';
  /** Redirect a restore to the asset's source while it still answers, sparing the volunteers. */
  restorePreferSource: boolean;
  /** The control plane's own requests to sources (the restore's source check) may reach private addresses. */
  sourceAllowPrivate: boolean;
  /** This instance's base URL as the other instances reach it; undefined: loopback on its port. */
  instanceUrl: string | undefined;
  /** How long a holder has to start sending a transfer, and at most between two of its chunks. */
  transferStartMs: number;
  /** The largest chunk of a transfer an agent may send in one request. */
  transferChunkMaxBytes: number;
  /** Random ranges of the source a new copy must match before it counts; 0 trusts the holder's checksum. */
  verifySpotChecks: number;
  /** Every counted copy is audited at a random time within this interval. */
  auditIntervalMs: number;
  /** Audits started per minute, over the whole control plane. */
  auditsPerMinute: number;
  /** How long a holder has to answer an audit. */
  auditDeadlineMs: number;
  /** Failed or missed retention audits in a row after which a copy stops counting. */
  auditFailuresToLose: number;
  /** A node whose share of passed audits falls below this gets no new work (0: never). */
  auditScoreMin: number;
  /** The window of audits a node's score counts. */
  auditScoreWindowMs: number;
  /** Copies on nodes of one operator count once, and one operator gets at most one copy of an asset. */
  distinctOperators: boolean;
  /** Audits or spot checks a new node passes before its copies count; 0: no vetting. */
  vettingAudits: number;
  /** Allocations a node being vetted holds at once. */
  vettingMaxAssets: number;
  /** A completion faster than this (bytes per second since the node was first given the asset) is refused with a strike; 0: no limit. */
  maxPlausibleRateBps: number;
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type PriorityPolicy = 'aging' | 'jitter' | 'none';

const MIB = 1024 * 1024;

/**
 * One documented variable: its names (first wins), parser and default, and for people the default
 * as they would type it (`shown`, in the variable's unit) and what it means (`doc`).
 * `dispatcher serve --help` prints this list; the README's table must agree (src/config-docs.test.ts).
 */
interface Variable<K extends keyof Config> {
  key: K;
  names: string[];
  parse: (raw: string) => Config[K];
  fallback: Config[K];
  shown: string;
  doc: string;
}

type Env = Record<string, string | undefined>;

// One variable per line, as a table: the README's configuration table lists them in this order.
// prettier-ignore
const variables = [
  { key: 'host', names: ['DISPATCHER_HOST', 'PRIORIZER_HOST', 'HOST'], parse: text, fallback: '0.0.0.0', shown: '0.0.0.0', doc: 'address to listen on; nodes must be able to reach it' },
  { key: 'port', names: ['PORT', 'DISPATCHER_PORT', 'PRIORIZER_PORT'], parse: integer(0, 65535), fallback: 8000, shown: '8000', doc: 'HTTP port' },
  { key: 'trustProxy', names: ['TRUST_PROXY'], parse: trustedProxies, fallback: false, shown: 'false', doc: 'whose X-Forwarded-For gives client addresses: false, true (every hop), or the proxies\' addresses/CIDRs, e.g. 127.0.0.1' },
  { key: 'databaseUrl', names: ['DATABASE_URL'], parse: databaseUrl, fallback: undefined, shown: 'unset', doc: 'postgres://user:pass@host:5432/db for PostgreSQL; unset: embedded SQLite under DATA_DIRECTORY' },
  { key: 'databaseSchema', names: ['DATABASE_SCHEMA'], parse: identifier, fallback: undefined, shown: 'unset', doc: 'PostgreSQL schema for Dispatcher\'s tables (unset: the server\'s search_path)' },
  { key: 'databasePoolSize', names: ['DATABASE_POOL_SIZE'], parse: integer(1, 1000), fallback: 10, shown: '10', doc: 'PostgreSQL connections per instance' },
  { key: 'preparedStatements', names: ['DATABASE_PREPARED_STATEMENTS'], parse: boolean, fallback: true, shown: 'true', doc: 'PostgreSQL: prepare recurring statements per connection; false behind a transaction-mode pooler' },
  { key: 'allocateBatchWaitMs', names: ['ALLOCATE_BATCH_WAIT_MS'], parse: integer(0, 1000), fallback: undefined, shown: '5 on PostgreSQL, 0 on SQLite', doc: 'milliseconds an instance waits after an /allocate batch for the nodes it answered to ask again; 0 never waits' },
  { key: 'dataDirectory', names: ['DATA_DIRECTORY'], parse: (raw: string) => path.resolve(raw), fallback: path.resolve('data'), shown: './data', doc: 'where the SQLite file dispatcher.sqlite lives' },
  { key: 'logLevel', names: ['LOG_LEVEL'], parse: oneOf<LogLevel>('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'), fallback: 'info', shown: 'info', doc: 'fatal, error, warn, info, debug (a line per request), trace or silent' },
  {
    key: 'autoUpdateIntervalMs',
    names: ['AUTO_UPDATE_INTERVAL_MINUTES'],
    parse: (raw: string) => Math.round(positiveNumber(10_080)(raw) * 60_000),
    fallback: 2 * 60_000,
    shown: '2',
    doc: 'minutes between passes of the priority policy',
  },
  { key: 'allocationExpiryMs', names: ['ALLOCATION_EXPIRY_HOURS'], parse: hoursToMs(positiveNumber(8_760)), fallback: 24 * HOUR, shown: '24', doc: 'hours an allocation lease lasts at most; unfinished work returns to the pool after it' },
  { key: 'priorityPolicy', names: ['PRIORITY_POLICY'], parse: oneOf<PriorityPolicy>('aging', 'jitter', 'none'), fallback: 'aging', shown: 'aging', doc: 'aging (unheld assets rise, rescued ones sink), jitter (random ±1 per pass) or none' },
  { key: 'priorityAgingMs', names: ['PRIORITY_AGING_HOURS'], parse: hoursToMs(positiveNumber(87_600)), fallback: 24 * HOUR, shown: '24', doc: 'hours an asset\'s priority stays put before aging moves it by one' },
  { key: 'jwtSecret', names: ['JWT_SECRET'], parse: secret, fallback: undefined, shown: 'generated', doc: 'key signing user tokens, at least 32 characters; unset: generated once and kept in the database' },
  { key: 'jwtSecretFile', names: ['JWT_SECRET_FILE'], parse: (raw: string) => path.resolve(raw), fallback: undefined, shown: 'unset', doc: 'a file holding the JWT secret (first line); refused when its group or others may read it; wins over JWT_SECRET' },
  { key: 'tokenTtlMs', names: ['TOKEN_TTL_HOURS'], parse: hoursToMs(positiveNumber(8_760)), fallback: 24 * HOUR, shown: '24', doc: 'hours a login token lasts' },
  { key: 'adminUser', names: ['DISPATCHER_ADMIN_USER'], parse: username, fallback: 'admin', shown: 'admin', doc: 'name of the admin account made from DISPATCHER_ADMIN_PASSWORD' },
  { key: 'adminPassword', names: ['DISPATCHER_ADMIN_PASSWORD'], parse: password, fallback: undefined, shown: 'unset', doc: 'when set, the admin account exists with this password (created, or reset at start)' },
  { key: 'signup', names: ['SIGNUP'], parse: oneOf('open', 'closed'), fallback: 'open', shown: 'open', doc: 'open: anyone may create an account; closed: only admins create accounts' },
  { key: 'nodeEnrollmentToken', names: ['NODE_ENROLLMENT_TOKEN'], parse: secret, fallback: undefined, shown: 'unset', doc: 'an enrollment token for nodes from the environment (at least 32 characters)' },
  { key: 'enrollmentTokenTtlMs', names: ['ENROLLMENT_TOKEN_TTL_HOURS'], parse: hoursToMs(positiveNumber(87_600)), fallback: 168 * HOUR, shown: '168', doc: 'lifetime of an enrollment token created without expires_in_hours' },
  { key: 'metricsToken', names: ['METRICS_TOKEN'], parse: secret, fallback: undefined, shown: 'unset', doc: 'bearer token GET /metrics requires (at least 32 characters); unset: /metrics is open' },
  { key: 'defaultReplicasTarget', names: ['DEFAULT_REPLICAS_TARGET'], parse: integer(1, 100), fallback: 1, shown: '1', doc: 'copies wanted for an asset imported without replicas_target' },
  {
    key: 'unknownSizeEstimateBytes',
    names: ['UNKNOWN_SIZE_ESTIMATE_MB'],
    parse: (raw: string) => Math.round(positiveNumber(10_000_000)(raw) * MIB),
    fallback: 1024 * MIB,
    shown: '1024',
    doc: 'MiB set aside on a node for an asset of unknown size',
  },
  { key: 'unknownSizeMaxPerRequest', names: ['UNKNOWN_SIZE_MAX_PER_REQUEST'], parse: integer(0, 1000), fallback: 2, shown: '2', doc: 'most assets of unknown size in one /allocate answer' },
  { key: 'replicasByPriority', names: ['REPLICAS_BY_PRIORITY'], parse: replicaRules, fallback: undefined, shown: 'unset', doc: 'copies wanted by priority, e.g. 8:3,1:2 (priority ≥ 8: 3 copies, else 2)' },
  { key: 'nodeTimeoutMs', names: ['NODE_TIMEOUT_SECONDS'], parse: (raw: string) => integer(5, 86_400)(raw) * 1000, fallback: 300_000, shown: '300', doc: 'seconds of silence after which a node becomes suspect' },
  { key: 'nodeDeadGraceMs', names: ['NODE_DEAD_GRACE_SECONDS'], parse: (raw: string) => integer(0, 604_800)(raw) * 1000, fallback: 600_000, shown: '600', doc: 'seconds more after which it is dead and its unfinished allocations return to the pool' },
  { key: 'reclaimMaxPerMinute', names: ['RECLAIM_MAX_PER_MINUTE'], parse: integer(1, 1_000_000), fallback: 600, shown: '600', doc: 'most allocations of dead nodes returned to the pool per minute' },
  { key: 'freeSpaceTtlMs', names: ['FREE_SPACE_TTL_SECONDS'], parse: (raw: string) => integer(1, 86_400)(raw) * 1000, fallback: 600_000, shown: '600', doc: 'seconds a node\'s free-space report is trusted' },
  { key: 'leaseMinMs', names: ['LEASE_MIN_MINUTES'], parse: (raw: string) => Math.round(positiveNumber(10_080)(raw) * 60_000), fallback: 30 * 60_000, shown: '30', doc: 'minutes of the shortest allocation lease' },
  {
    key: 'defaultNodeRateBytesPerSecond',
    names: ['DEFAULT_NODE_RATE_MB_S'],
    parse: (raw: string) => Math.round(positiveNumber(100_000)(raw) * MIB),
    fallback: 10 * MIB,
    shown: '10',
    doc: 'MiB/s assumed for a node that has not reported its rate',
  },
  { key: 'maxStrikes', names: ['MAX_STRIKES'], parse: integer(1, 100), fallback: 6, shown: '6', doc: 'failed, expired or mismatched allocations that stop a node getting work until an admin clears it' },
  { key: 'sourceGoneConfirmations', names: ['SOURCE_GONE_CONFIRMATIONS'], parse: integer(1, 100), fallback: 2, shown: '2', doc: 'distinct nodes that must find a source answering 404/410 before an asset without copies is gone, or failing in any way before one with copies is repaired from them' },
  { key: 'mismatchConfirmations', names: ['MISMATCH_CONFIRMATIONS'], parse: integer(1, 100), fallback: 2, shown: '2', doc: 'distinct nodes whose size or checksum mismatches make an asset suspect (not handed out)' },
  { key: 'retryCooldownMs', names: ['RETRY_COOLDOWN_SECONDS'], parse: (raw: string) => integer(1, 604_800)(raw) * 1000, fallback: 600_000, shown: '600', doc: 'seconds a node that failed an asset waits before getting it again, doubling per failure' },
  { key: 'retryCooldownMaxMs', names: ['RETRY_COOLDOWN_MAX_HOURS'], parse: hoursToMs(positiveNumber(8_760)), fallback: 168 * HOUR, shown: '168', doc: '… up to this many hours' },
  { key: 'sourceHostMaxActive', names: ['SOURCE_HOST_MAX_ACTIVE'], parse: integer(0, 1_000_000), fallback: 8, shown: '8', doc: 'active allocations per source host across all nodes; 0: no cap' },
  { key: 'sourcePauseDefaultMs', names: ['SOURCE_PAUSE_DEFAULT_SECONDS'], parse: (raw: string) => integer(1, 86_400)(raw) * 1000, fallback: 60_000, shown: '60', doc: 'seconds a source that answered 429/503 without Retry-After gets no new allocation' },
  { key: 'sourcePauseMaxMs', names: ['SOURCE_PAUSE_MAX_HOURS'], parse: hoursToMs(positiveNumber(168)), fallback: 24 * HOUR, shown: '24', doc: 'hours of the longest pause a source\'s Retry-After can ask for' },
  { key: 'spreadTag', names: ['SPREAD_TAG'], parse: text, fallback: 'region', shown: 'region', doc: 'node tag across which copies of one asset are spread' },
  { key: 'bodyLimitBytes', names: ['BODY_LIMIT_BYTES'], parse: integer(1024, 1024 * MIB), fallback: MIB, shown: '1048576', doc: 'largest request body in bytes (413 above)' },
  { key: 'requestTimeoutMs', names: ['REQUEST_TIMEOUT_SECONDS'], parse: (raw: string) => integer(1, 3_600)(raw) * 1000, fallback: 30_000, shown: '30', doc: 'how long a client may take to send a whole request (408 after it); idle connections close after twice that' },
  { key: 'loginRateLimitPerMinute', names: ['LOGIN_RATE_LIMIT_PER_MINUTE'], parse: integer(0, 1_000_000), fallback: 20, shown: '20', doc: 'sign-ups, logins and node registrations per client address per minute' },
  { key: 'authFailuresPerMinute', names: ['AUTH_FAILURES_PER_MINUTE'], parse: integer(1, 1_000_000), fallback: 30, shown: '30', doc: 'failed authentications (unknown or bad tokens) per client address per minute before 429' },
  { key: 'userRateLimitPerMinute', names: ['USER_RATE_LIMIT_PER_MINUTE'], parse: integer(1, 1_000_000), fallback: 120, shown: '120', doc: 'schedule and rental calls per user per minute' },
  { key: 'nodeRateLimitPerMinute', names: ['NODE_RATE_LIMIT_PER_MINUTE'], parse: integer(0, 10_000_000), fallback: 6_000, shown: '6000', doc: '/allocate, /release and /complete calls per token per minute' },
  { key: 'catalogRequestsPerSecond', names: ['CATALOG_REQUESTS_PER_SECOND'], parse: positiveNumber(10_000), fallback: 2, shown: '2', doc: 'dispatcher import: requests per second to a portal (retries included)' },
  { key: 'catalogTimeoutMs', names: ['CATALOG_TIMEOUT_SECONDS'], parse: (raw: string) => Math.round(positiveNumber(3_600)(raw) * 1000), fallback: 60_000, shown: '60', doc: 'dispatcher import: seconds one portal request may take before it is retried' },
  { key: 'catalogMaxPageBytes', names: ['CATALOG_MAX_PAGE_BYTES'], parse: integer(1024, 2 ** 40), fallback: 64 * MIB, shown: '67108864', doc: 'the largest answer one portal request may send (a page of a catalog, a data.json); a larger one stops the import with a message' },
  { key: 'catalogMaxRetries', names: ['CATALOG_MAX_RETRIES'], parse: integer(0, 20), fallback: 5, shown: '5', doc: 'dispatcher import: retries of a request answered 429, 5xx or not at all, of an empty page, and of a page the database was too busy to write' },
  { key: 'catalogMaxRetryWaitMs', names: ['CATALOG_MAX_RETRY_WAIT_SECONDS'], parse: (raw: string) => integer(1, 86_400)(raw) * 1000, fallback: 3_600_000, shown: '3600', doc: 'dispatcher import: the longest a portal\'s Retry-After is waited, in seconds' },
  { key: 'catalogRemovedPriorityBoost', names: ['CATALOG_REMOVED_PRIORITY_BOOST'], parse: integer(0, 9), fallback: 2, shown: '2', doc: 'priority added (up to 10) to an asset a complete re-import no longer finds' },
  { key: 'catalogPriorityRules', names: ['CATALOG_PRIORITY_RULES'], parse: parsePriorityRules, fallback: [], shown: 'unset', doc: 'initial priorities of imported assets by organization, keyword or format (a JSON list)' },
  { key: 'catalogHeadConcurrency', names: ['CATALOG_HEAD_CONCURRENCY'], parse: integer(1, 256), fallback: 8, shown: '8', doc: 'dispatcher import --discover-sizes: HEAD requests in flight at once' },
  { key: 'datagovApiUrl', names: ['DATAGOV_API_URL'], parse: httpUrl, fallback: 'https://catalog.data.gov', shown: 'https://catalog.data.gov', doc: 'the new catalog.data.gov API, for dispatcher import datagov' },
  { key: 'datagovApiKey', names: ['DATAGOV_API_KEY'], parse: text, fallback: undefined, shown: 'unset', doc: 'its key, sent as X-Api-Key' },
  { key: 'catalogSyncIntervalMs', names: ['CATALOG_SYNC_INTERVAL'], parse: duration(60_000, 366 * 24 * HOUR), fallback: undefined, shown: 'unset (off)', doc: 'how often serve imports CATALOG_SYNC_SOURCES again, e.g. 30m, 6h, 1d' },
  { key: 'catalogSyncSources', names: ['CATALOG_SYNC_SOURCES'], parse: parseSyncSources, fallback: undefined, shown: 'unset', doc: 'the catalogs to re-sync: a JSON list of POST /imports bodies' },
  { key: 'rentMaxMs', names: ['RENT_MAX_HOURS'], parse: hoursToMs(positiveNumber(8_760)), fallback: 168 * HOUR, shown: '168', doc: 'hours the longest rental may last, extensions included' },
  { key: 'rentMaxCount', names: ['RENT_MAX_COUNT'], parse: integer(1, 1000), fallback: 10, shown: '10', doc: 'most workers one /api/rent may ask for' },
  { key: 'userMaxWorkers', names: ['USER_MAX_WORKERS'], parse: integer(1, 100_000), fallback: 10, shown: '10', doc: 'workers one user may hold at once, rentals and reserve schedules together (admins exempt)' },
  { key: 'userMaxWorkerHoursPerWeek', names: ['USER_MAX_WORKER_HOURS_PER_WEEK'], parse: integer(1, 10_000_000), fallback: 336, shown: '336', doc: 'worker-hours one user may hold in any 7 days, rentals and reserve windows together (admins exempt)' },
  { key: 'reserveMaxSpanMs', names: ['RESERVE_MAX_SPAN_DAYS'], parse: (raw: string) => integer(1, 3_660)(raw) * 24 * HOUR, fallback: 90 * 24 * HOUR, shown: '90', doc: 'the longest span (start_time to end_time) of a reserve schedule (admins exempt)' },
  { key: 'maxSchedulesPerUser', names: ['MAX_SCHEDULES_PER_USER'], parse: integer(1, 1_000_000), fallback: 100, shown: '100', doc: 'schedules one user may keep scheduled or running (admins exempt)' },
  { key: 'provisioningKeyFile', names: ['PROVISIONING_KEY_FILE'], parse: (raw: string) => path.resolve(raw), fallback: undefined, shown: 'unset', doc: 'OpenSSH private key workers are provisioned with; unset: generated and kept in the database' },
  { key: 'sshTimeoutMs', names: ['SSH_TIMEOUT_SECONDS'], parse: (raw: string) => Math.round(positiveNumber(600)(raw) * 1000), fallback: 15_000, shown: '15', doc: 'seconds to connect to a worker and run one provisioning command' },
  { key: 'workerProbeIntervalMs', names: ['WORKER_PROBE_INTERVAL_SECONDS'], parse: (raw: string) => integer(1, 86_400)(raw) * 1000, fallback: 30_000, shown: '30', doc: 'seconds between probes of every worker\'s SSH port' },
  { key: 'workerProbeFailures', names: ['WORKER_PROBE_FAILURES'], parse: integer(1, 100), fallback: 3, shown: '3', doc: 'failed probes in a row after which a worker is dead' },
  { key: 'workerApproval', names: ['WORKER_APPROVAL'], parse: oneOf('auto', 'admin'), fallback: 'auto', shown: 'auto', doc: 'auto: a worker is rentable once it proved its SSH host key; admin: also only after an admin approved it' },
  { key: 'workerAddress', names: ['WORKER_ADDRESS'], parse: oneOf('connection', 'declared'), fallback: 'connection', shown: 'connection', doc: 'connection: a worker is reached at the address its agent registered from; declared: at the ip it sends (workers behind NAT or a proxy)' },
  { key: 'taskMaxAttempts', names: ['TASK_MAX_ATTEMPTS'], parse: integer(1, 100), fallback: 6, shown: '6', doc: 'attempts of a provisioning or cleanup task before giving up' },
  { key: 'taskRetryBaseMs', names: ['TASK_RETRY_SECONDS'], parse: (raw: string) => Math.round(positiveNumber(3_600)(raw) * 1000), fallback: 10_000, shown: '10', doc: 'seconds before the first retry of a failed task, doubling, at most 1 hour' },
  { key: 'restoreAccess', names: ['RESTORE_ACCESS'], parse: oneOf('users', 'admins', 'public'), fallback: 'users', shown: 'users', doc: 'who may restore a copy (GET /assets/{id}/content, dispatcher fetch): users (any logged-in user), admins, or public (no token)' },
  { key: 'restorePreferSource', names: ['RESTORE_PREFER_SOURCE'], parse: boolean, fallback: true, shown: 'true', doc: 'answer a restore with a redirect to the asset\'s source while the source still answers, sparing volunteers' },
  { key: 'sourceAllowPrivate', names: ['SOURCE_ALLOW_PRIVATE_NETWORKS'], parse: boolean, fallback: false, shown: 'false', doc: 'let the control plane\'s own requests to sources (the restore\'s source check, spot checks and audits) reach loopback and private addresses' },
  { key: 'instanceUrl', names: ['INSTANCE_URL'], parse: httpUrl, fallback: undefined, shown: 'unset', doc: 'this instance\'s URL as other instances reach it, for relaying transfers between instances (unset: loopback on PORT, right when they share one machine)' },
  { key: 'transferStartMs', names: ['TRANSFER_START_SECONDS'], parse: (raw: string) => integer(1, 3_600)(raw) * 1000, fallback: 30_000, shown: '30', doc: 'seconds a holder has to start sending a transfer (a restore) before it moves to another holder' },
  { key: 'transferChunkMaxBytes', names: ['TRANSFER_CHUNK_MAX_BYTES'], parse: integer(65_536, 1024 * MIB), fallback: 64 * MIB, shown: '67108864', doc: 'the largest chunk of a transfer an agent sends in one request (agents size chunks to take a few seconds)' },
  { key: 'verifySpotChecks', names: ['VERIFY_SPOT_CHECKS'], parse: integer(0, 16), fallback: 3, shown: '3', doc: 'random 64 KiB ranges of the source a new copy must match (its holder hashes them with a fresh nonce) before it counts; 0 counts a copy on its reported checksum alone' },
  { key: 'auditIntervalMs', names: ['AUDIT_INTERVAL_HOURS'], parse: hoursToMs(positiveNumber(87_600)), fallback: 168 * HOUR, shown: '168', doc: 'every counted copy is audited (a random block with its Merkle path, or nonced ranges) at a random time within this many hours; fractions allowed' },
  { key: 'auditsPerMinute', names: ['AUDITS_PER_MINUTE'], parse: integer(1, 1_000_000), fallback: 600, shown: '600', doc: 'audits and spot checks started per minute, over the whole control plane' },
  { key: 'auditDeadlineMs', names: ['AUDIT_DEADLINE_SECONDS'], parse: (raw: string) => integer(5, 86_400)(raw) * 1000, fallback: 600_000, shown: '600', doc: 'seconds a holder has to answer an audit; an unanswered one is a miss' },
  { key: 'auditFailuresToLose', names: ['AUDIT_FAILURES_TO_LOSE'], parse: integer(1, 100), fallback: 2, shown: '2', doc: 'failed or missed retention audits in a row after which a copy is lost (it stops counting, repair begins)' },
  { key: 'auditScoreMin', names: ['AUDIT_SCORE_MIN'], parse: (raw: string) => (raw.trim() === '0' ? 0 : positiveNumber(1)(raw)), fallback: 0.8, shown: '0.8', doc: 'a node whose share of passed audits (at least 5 in the window) falls below this gets no new work, and admins get an event; 0: never' },
  { key: 'distinctOperators', names: ['DISTINCT_OPERATORS'], parse: boolean, fallback: true, shown: 'true', doc: 'replicas_target counts copies on distinct operators (the users behind nodes), one operator gets at most one copy of an asset, and gone needs confirmations from distinct operators; false: distinct nodes' },
  { key: 'vettingAudits', names: ['VETTING_AUDITS'], parse: integer(0, 1000), fallback: 5, shown: '5', doc: 'audits or spot checks a new node must pass before its copies count (it holds at most VETTING_MAX_ASSETS allocations meanwhile); 0: no vetting' },
  { key: 'vettingMaxAssets', names: ['VETTING_MAX_ASSETS'], parse: integer(1, 100_000), fallback: 10, shown: '10', doc: 'allocations a node being vetted holds at once' },
  { key: 'maxPlausibleRateBps', names: ['MAX_PLAUSIBLE_RATE_MB_S'], parse: (raw: string) => (raw.trim() === '0' ? 0 : Math.round(positiveNumber(1_000_000)(raw) * 1_000_000)), fallback: 1_250_000_000, shown: '1250', doc: 'a completion faster than this many MB/s (its bytes over the time since the node was first given the asset, at least 1 s) is refused with a strike; 0: no limit' },
  { key: 'auditScoreWindowMs', names: ['AUDIT_SCORE_WINDOW_DAYS'], parse: (raw: string) => integer(1, 3_660)(raw) * 24 * HOUR, fallback: 30 * 24 * HOUR, shown: '30', doc: 'days of audits a node\'s score counts' },
] as const satisfies readonly Variable<keyof Config>[];

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
  }
}

/** Reads every variable, collecting every problem before failing, so one run shows them all. */
export function loadConfig(env: Env): Config {
  const problems: string[] = [];
  const config: Partial<Record<keyof Config, unknown>> = {};
  for (const variable of variables as readonly Variable<keyof Config>[]) {
    const name = variable.names.find((candidate) => env[candidate] !== undefined && env[candidate] !== '');
    if (name === undefined) {
      config[variable.key] = variable.fallback;
      continue;
    }
    try {
      config[variable.key] = variable.parse(env[name] as string);
    } catch (error) {
      problems.push(`${name} ${(error as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config as Config;
}

/** The defaults with some values replaced: the way tests and benchmarks make a Config. */
export function buildConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), ...overrides };
}

export interface VariableDescription {
  key: keyof Config;
  names: string[];
  /** The default as a user types it, in the variable's unit (`24` hours), or `unset`. */
  shown: string;
  doc: string;
}

/** Every variable with its names, default as typed and meaning, for `dispatcher serve --help`. */
export function describeVariables(): VariableDescription[] {
  return variables.map((variable) => ({ key: variable.key, names: [...variable.names], shown: variable.shown, doc: variable.doc }));
}
