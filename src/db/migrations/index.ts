import type { Kysely } from 'kysely';
import type { Dialect } from '../dialect.js';
import * as initial from './0001-initial.js';
import * as nodeLiveness from './0002-node-liveness.js';
import * as catalogLinks from './0003-catalog-links.js';
import * as workerLeasing from './0004-worker-leasing.js';
import * as importJobs from './0005-import-jobs.js';
import * as schedules from './0006-schedules.js';
import * as heldByNode from './0007-held-by-node.js';
import * as nodeReservations from './0008-node-reservations.js';
import * as oneNodeIndex from './0009-one-node-index.js';
import * as agentSafety from './0010-agent-safety.js';
import * as scheduleWindows from './0011-schedule-windows.js';
import * as authHardening from './0012-auth-hardening.js';
import * as workerIdentity from './0013-worker-identity.js';
import * as reserveWindows from './0014-reserve-windows.js';
import * as transfers from './0015-transfers.js';
import * as proofs from './0016-proofs.js';
import * as operatorsVetting from './0017-operators-vetting.js';
import * as allocationsByAsset from './0018-allocations-by-asset.js';

interface DialectMigration {
  up(db: Kysely<unknown>, dialect: Dialect): Promise<void>;
}

/** Every migration, in order. Names are frozen once released. */
export const migrations: Record<string, DialectMigration> = {
  '0001-initial': initial,
  '0002-node-liveness': nodeLiveness,
  '0003-catalog-links': catalogLinks,
  '0004-worker-leasing': workerLeasing,
  '0005-import-jobs': importJobs,
  '0006-schedules': schedules,
  '0007-held-by-node': heldByNode,
  '0008-node-reservations': nodeReservations,
  '0009-one-node-index': oneNodeIndex,
  '0010-agent-safety': agentSafety,
  '0011-schedule-windows': scheduleWindows,
  '0012-auth-hardening': authHardening,
  '0013-worker-identity': workerIdentity,
  '0014-reserve-windows': reserveWindows,
  '0015-transfers': transfers,
  '0016-proofs': proofs,
  '0017-operators-vetting': operatorsVetting,
  '0018-allocations-by-asset': allocationsByAsset,
};
