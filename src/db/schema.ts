import type { AllocationsTable, RetryCooldownsTable } from '../allocations/allocations.table.js';
import type { AuditsTable } from '../audits/audits.table.js';
import type { AssetsTable } from '../assets/assets.table.js';
import type { AssetLinksTable } from '../catalog/catalog.table.js';
import type { ImportsTable } from '../catalog/import-jobs.table.js';
import type { EventsTable } from '../events/events.table.js';
import type { LoopsTable } from '../lib/loop.js';
import type { EnrollmentTokensTable, NodesTable } from '../nodes/nodes.table.js';
import type { RentalsTable } from '../rentals/rentals.table.js';
import type { SchedulesTable } from '../schedules/schedules.table.js';
import type { SourceHostsTable } from '../sources/sources.table.js';
import type { TasksTable } from '../tasks/tasks.table.js';
import type { TransfersTable } from '../transfers/transfers.table.js';
import type { UsersTable } from '../users/users.table.js';
import type { SettingsTable } from './settings.js';

/** Every table, as Kysely sees it. Times are epoch milliseconds on both databases. */
export interface Database {
  settings: SettingsTable;
  users: UsersTable;
  nodes: NodesTable;
  enrollment_tokens: EnrollmentTokensTable;
  assets: AssetsTable;
  asset_links: AssetLinksTable;
  allocations: AllocationsTable;
  events: EventsTable;
  loops: LoopsTable;
  rentals: RentalsTable;
  tasks: TasksTable;
  schedules: SchedulesTable;
  imports: ImportsTable;
  retry_cooldowns: RetryCooldownsTable;
  source_hosts: SourceHostsTable;
  transfers: TransfersTable;
  audits: AuditsTable;
}
