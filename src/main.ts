import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { readPrivateFile } from './lib/private-files.js';
import { compileBodyValidator } from './http/request-rules.js';
import { pino, type Logger } from 'pino';
import { importAssets, replicaDefaultFrom } from './assets/assets.service.js';
import { AssetInput } from './assets/assets.schemas.js';
import { Type } from '@sinclair/typebox';
import { systemClock, type Clock } from './clock.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { openDatabase, type DatabaseHandle } from './db/database.js';
import { migrateToLatest } from './db/migrate.js';
import { buildApp } from './http/app.js';
import type { App, AppContext } from './http/context.js';
import { describeValidationErrors } from './http/validation.js';
import { createLoop, type Loop } from './lib/loop.js';
import { PASSWORD_COST, type PasswordCost } from './lib/secrets.js';
import { defineLoops } from './loops.js';
import { createMetrics, type Metrics } from './metrics/metrics.js';
import { instanceUrlOf, TransferHub } from './transfers/transfer-hub.js';
import { createJwtIssuer } from './users/jwt.js';
import { loadProvisioningKey } from './workers/ssh.js';
import { ensureAdmin, signUp } from './users/users.service.js';
import type { ImportIo, RunSummary } from './catalog/catalog-import.js';
import { sleep } from './lib/backoff.js';
import { importCkan, type CkanFlags } from './catalog/ckan.import.js';
import { createImportRunner } from './catalog/import-runner.js';
import { createImportDisplay } from './catalog/import-progress.js';
import { importDatagov, type DatagovFlags } from './catalog/datagov.import.js';
import { importDcat } from './catalog/dcat.import.js';

/** Reads the environment once; on any invalid variable prints them all and exits non-zero. */
export function loadConfigOrExit(overrides: Partial<Config> = {}): Config {
  try {
    return { ...loadConfig(process.env), ...overrides };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
}

export function createLogger(config: Config): Logger {
  return pino({ level: config.logLevel, base: undefined });
}

/** Opens the database and brings its schema up to date. */
export async function openMigratedDatabase(config: Config, logger: Logger): Promise<DatabaseHandle> {
  const handle = openDatabase(config);
  const applied = await migrateToLatest(handle);
  logger.info({ database: handle.dialect.name, location: handle.location, applied }, 'database ready');
  return handle;
}

export interface RunningServer {
  app: App;
  url: string;
  ctx: AppContext;
  loops: Loop[];
  metrics: Metrics;
  stop(): Promise<void>;
}

export interface StartOptions {
  clock?: Clock;
  logger?: Logger;
  loops?: boolean;
  /** The test harness's cheap scrypt cost; `dispatcher serve` never passes one, so it hashes at `PASSWORD_COST`. */
  passwordCost?: PasswordCost;
}

/**
 * Starts everything in order (database, migrations, admin, HTTP, loops) and returns a `stop` that
 * closes them in reverse, once.
 */
export async function startServer(config: Config, options: StartOptions = {}): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  const passwordCost = options.passwordCost ?? PASSWORD_COST;
  const logger = options.logger ?? createLogger(config);
  const handle = await openMigratedDatabase(config, logger);
  try {
    const jwt = await createJwtIssuer(handle.db, { secret: jwtSecretOf(config), ttlMs: config.tokenTtlMs });
    if (config.adminPassword) {
      const outcome = await ensureAdmin(
        handle.db,
        { username: config.adminUser, password: config.adminPassword, actor: 'system', now: clock.now() },
        passwordCost,
      );
      logger.info({ user: config.adminUser, outcome }, 'admin account from DISPATCHER_ADMIN_PASSWORD');
    }
    if (config.provisioningKeyFile !== undefined) readPrivateFile(config.provisioningKeyFile, 'PROVISIONING_KEY_FILE');
    const provisioningKey = await loadProvisioningKey(handle.db, config.provisioningKeyFile);
    const imports = createImportRunner({ db: handle.db, config, clock, logger });
    const transfers = new TransferHub(handle.db);
    const ctx: AppContext = { db: handle.db, dialect: handle.dialect, config, clock, jwt, provisioningKey, imports, passwordCost, transfers };
    const metrics = createMetrics({ db: handle.db, clock, poolUsage: () => handle.poolUsage() });
    const app = await buildApp(ctx, { logger, metrics });
    const url = await app.listen({ host: config.host, port: config.port });
    transfers.selfUrl = config.instanceUrl ?? instanceUrlOf(config.host, (app.server.address() as AddressInfo).port);
    const loops = defineLoops(ctx).map((definition) => createLoop(definition, { db: handle.db, clock, logger, observer: metrics.loopObserver }));
    if (options.loops !== false) for (const loop of loops) loop.start();
    let stopping: Promise<void> | undefined;
    const stop = () =>
      (stopping ??= (async () => {
        for (const loop of [...loops].reverse()) await loop.stop();
        transfers.close();
        await app.close();
        await imports.stop();
        await handle.close();
      })());
    return { app, url, ctx, loops, metrics, stop };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** `dispatcher serve`: runs until SIGINT/SIGTERM, then shuts down with a watchdog. */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config);
  const server = await startServer(config, { logger });
  logger.info({ url: server.url, docs: `${server.url}/docs` }, 'dispatcher is serving');
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutting down');
    // Requests and loop passes get 10 s to finish; then the process exits regardless.
    setTimeout(() => {
      logger.error('shutdown took longer than 10 s; exiting');
      process.exit(1);
    }, 10_000).unref();
    server.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

/** `dispatcher migrate`: returns the names of the migrations this call applied. */
export async function migrate(config: Config): Promise<string[]> {
  const handle = openDatabase(config);
  try {
    return await migrateToLatest(handle);
  } finally {
    await handle.close();
  }
}

/** Runs `work` against a migrated database and closes it, for the one-shot CLI commands. */
export async function withDatabase<T>(config: Config, work: (handle: DatabaseHandle) => Promise<T>): Promise<T> {
  const handle = await openMigratedDatabase(config, createLogger({ ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel }));
  try {
    return await work(handle);
  } finally {
    await handle.close();
  }
}

export async function addUser(config: Config, input: { username: string; password: string; admin: boolean }): Promise<string> {
  return withDatabase(config, async ({ db }) => {
    const now = systemClock.now();
    if (input.admin) return ensureAdmin(db, { username: input.username, password: input.password, actor: 'cli', now });
    await signUp(db, { username: input.username, password: input.password, actor: 'cli', now });
    return 'created';
  });
}

// No count limit here, unlike POST /assets: a file is read locally, by an operator.
const validateAssetList = compileBodyValidator(Type.Array(AssetInput));

/**
 * `dispatcher import json FILE`: the seeds' `ckan_data.json` (a list of assets, or an object with
 * an `assets` or `datasets` list), validated like `POST /assets`, imported in one transaction.
 */
export async function importJsonFile(config: Config, file: string): Promise<number> {
  const text = await fs.readFile(file, 'utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  const list = Array.isArray(parsed) ? parsed : ((parsed as Record<string, unknown>)?.assets ?? (parsed as Record<string, unknown>)?.datasets);
  if (!Array.isArray(list)) throw new Error(`${file} must hold a JSON list of assets (or an object with an "assets" list).`);
  if (!validateAssetList(list)) {
    throw new Error(`${file} has invalid assets: ${describeValidationErrors('', validateAssetList.errors ?? []).detail}`);
  }
  return withDatabase(config, ({ db }) =>
    importAssets(db, list as AssetInput[], { replicasFor: replicaDefaultFrom(config), actor: 'cli', source: file }, systemClock.now()),
  );
}

/** Catalog imports from the command line: real time, real waits, progress on stderr (a bar on a terminal). */
const processIo: ImportIo = {
  now: () => systemClock.now(),
  elapsedMs: () => performance.now(),
  sleep,
  display: createImportDisplay(process.stderr, () => performance.now()),
};

/** `dispatcher import ckan URL`: pages through the portal's package_search into assets. */
export async function importCkanPortal(config: Config, portalUrl: string, flags: CkanFlags): Promise<RunSummary> {
  return withDatabase(config, ({ db }) => importCkan(db, config, processIo, portalUrl, flags));
}

/** `dispatcher import datagov`: follows the new catalog.data.gov API's cursor into assets. */
export async function importDatagovCatalog(config: Config, flags: DatagovFlags): Promise<RunSummary> {
  return withDatabase(config, ({ db }) => importDatagov(db, config, processIo, flags));
}

/** `dispatcher import dcat URL|FILE`: the distributions of a DCAT-US data.json into assets. */
export async function importDcatCatalog(config: Config, location: string, flags: { discoverSizes?: boolean }): Promise<RunSummary> {
  return withDatabase(config, ({ db }) => importDcat(db, config, processIo, location, flags));
}

/** JWT_SECRET_FILE's first line (the file readable by this service alone), else JWT_SECRET. */
function jwtSecretOf(config: Config): string | undefined {
  if (config.jwtSecretFile === undefined) return config.jwtSecret;
  const secret = readPrivateFile(config.jwtSecretFile, 'JWT_SECRET_FILE').split('\n')[0]?.trim() ?? '';
  if (secret.length < 32) throw new Error(`JWT_SECRET_FILE ${config.jwtSecretFile} must hold a secret of at least 32 characters on its first line.`);
  return secret;
}
