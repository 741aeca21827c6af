import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify';
import type { ImportRunner } from '../catalog/import-runner.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Db } from '../db/database.js';
import type { Dialect } from '../db/dialect.js';
import type { PasswordCost } from '../lib/secrets.js';
import type { JwtIssuer } from '../users/jwt.js';
import type { TransferHub } from '../transfers/transfer-hub.js';
import type { ProvisioningKey } from '../workers/ssh.js';

/** What every route file receives: the app's dependencies, passed explicitly. */
export interface AppContext {
  db: Db;
  dialect: Dialect;
  config: Config;
  clock: Clock;
  jwt: JwtIssuer;
  /** Runs catalog import jobs on this instance. */
  imports: ImportRunner;
  /** The control plane's SSH key for provisioning rentals on workers. */
  provisioningKey: ProvisioningKey;
  /** scrypt cost of new password hashes: always `PASSWORD_COST`, except in the test harness. */
  passwordCost: PasswordCost;
  /** Transfers in flight on this instance: restores waiting for bytes, nodes long-polling for work to send. */
  transfers: TransferHub;
}

export type App = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;
