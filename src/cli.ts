#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { describeVariables } from './config.js';
import { agentSettings, kebab, type AgentFlags } from './agent/agent.config.js';
import type { RunSummary } from './catalog/catalog-import.js';
import type { FetchFlags } from './fetch/fetch.config.js';
import { readPassword } from './lib/prompt.js';
import { workerExec } from './workers/worker-exec.js';

function positive(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new InvalidArgumentError('must be a positive number');
  return parsed;
}

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 1_000_000) throw new InvalidArgumentError('must be an integer from 1 to 1000000');
  return parsed;
}

function id(value: string): number {
  const parsed = Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 1) throw new InvalidArgumentError('must be a positive integer id');
  return parsed;
}

function rows(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 1000) throw new InvalidArgumentError('must be an integer from 1 to 1000 (portals cap pages at 1000)');
  return parsed;
}

function port(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65535) throw new InvalidArgumentError('must be a port number (0–65535)');
  return parsed;
}

// The server's modules (the database drivers, one of them native, and Fastify) are imported by the
// commands that use them, so `agent` and `worker-exec` load none of them.
const loadServer = () => import('./main.js');

async function printSummary(summary: RunSummary): Promise<void> {
  const { describeSummary } = await import('./catalog/catalog-import.js');
  console.log(describeSummary(summary));
}

// Generated from the same list as the README's configuration table (src/config-docs.test.ts
// compares them): every default in the unit the variable is given in.
const variablesHelp = `\nEnvironment variables (the first name set wins; the README's Configuration table says more):\n${describeVariables()
  .map((variable) => `  ${variable.names.join(' / ')} (default: ${variable.shown})\n      ${variable.doc}`)
  .join('\n')}\n`;

const program = new Command('dispatcher')
  .description('Control plane for distributed science data rescue.')
  .showHelpAfterError()
  .configureOutput({ outputError: (text, write) => write(text) });

program
  .command('serve')
  .description('Run the HTTP API and the background loops (SQLite under DATA_DIRECTORY, or DATABASE_URL).')
  .option('--port <port>', 'listen on this port (overrides PORT)', port)
  .option('--host <host>', 'listen on this address (overrides DISPATCHER_HOST)')
  .addHelpText('after', variablesHelp)
  .action(async (options: { port?: number; host?: string }) => {
    const { serve, loadConfigOrExit } = await loadServer();
    await serve(loadConfigOrExit({ ...(options.port !== undefined ? { port: options.port } : {}), ...(options.host ? { host: options.host } : {}) }));
  });

const agentCommand = program
  .command('agent')
  .description('Run a rescue node: register, take work, download, verify, keep copies. Each flag also reads the environment variable shown in brackets.')
  .action(async (flags: AgentFlags) => {
    const { agent } = await import('./agent/main.js');
    await agent(flags);
  });
for (const setting of agentSettings) {
  agentCommand.option(`--${kebab(setting.flag)} <value>`, `${setting.help} [${setting.env}]`);
  if ('formerly' in setting) agentCommand.addOption(new Option(`--${kebab(setting.formerly.flag)} <value>`).hideHelp());
}

const fetchHelp = `
With ASSET_ID…, each asset goes to --out: a file for one id (unless it names a directory), a directory
for several (default: the current one), named after the asset ("-2" and so on when a name is taken).
Bytes go to <file>.part first; an interrupted run resumes where it stopped, and the file gets its
name only once its sha256 matches. With --dataset, --organization (both may be given) or --all, the
assets go into a BagIt bag at --bag DIR: data/<organization>/<dataset>/<file>, manifest-sha256.txt,
bag-info.txt and dispatcher-assets.tsv (each file's asset id, source URL and rescue date); running it
again keeps the files already there and verified. Assets without a verified copy are skipped.
Exit status: 0 when everything asked for (every asset with a copy, for a bag) is there and verified,
1 otherwise, 130 when interrupted. Progress goes to stderr, one line per asset to stdout.
`;

program
  .command('fetch')
  .description('Get rescued files back through the control plane, checked against their sha256: assets by id, or a BagIt bag.')
  .argument('[asset-ids...]', 'the assets to restore')
  .option('--out <path>', 'where the files go (default: the current directory)')
  .option('--bag <dir>', 'export a BagIt bag into this directory (with --dataset, --organization or --all)')
  .option('--dataset <name>', 'the assets of this dataset (exact name)')
  .option('--organization <org>', 'the assets of this organization (exact name)')
  .option('--all', 'every asset')
  .option('--api-endpoint <url>', 'control plane URL, e.g. https://dispatcher.example.org [API_ENDPOINT]')
  .option('--token <token>', 'a user token from POST /auth/login; none if the server has RESTORE_ACCESS=public [DISPATCHER_TOKEN]')
  .addHelpText('after', fetchHelp)
  .action(async (assetIds: string[], flags: FetchFlags) => {
    const { fetchCommand } = await import('./fetch/main.js');
    await fetchCommand(assetIds, flags);
  });

program
  .command('worker-exec')
  .description(
    "On a worker: run one provisioning command sent by the control plane (the forced command of its key in the provisioning account's authorized_keys; reads SSH_ORIGINAL_COMMAND).",
  )
  .action(async () => {
    process.exitCode = await workerExec(process.env.SSH_ORIGINAL_COMMAND);
  });

program
  .command('worker-setup')
  .description(
    "On a worker, as root: install the account helper /usr/local/sbin/dispatcher-account and the sudoers rule that lets the provisioning account run it and nothing else; with --provisioning-key, also write that account's authorized_keys (root-owned, the key forced to `dispatcher worker-exec`).",
  )
  .option('--user <name>', 'the provisioning account the control plane logs in as', 'dispatcher')
  .option('--provisioning-key <key>', "the control plane's SSH public key (GET /api/provisioning-key)")
  .option('--print', 'print the files instead of writing them')
  .action(async (options: { user: string; provisioningKey?: string; print?: boolean }) => {
    const { workerSetup } = await import('./workers/worker-install.js');
    process.exitCode = await workerSetup({ provisioningUser: options.user, provisioningKey: options.provisioningKey, print: options.print === true });
  });

program
  .command('migrate')
  .description('Bring the database schema up to date and exit (serve also does this at start).')
  .action(async () => {
    const { migrate, loadConfigOrExit } = await loadServer();
    const applied = await migrate(loadConfigOrExit());
    console.log(applied.length === 0 ? 'Schema already up to date.' : `Applied: ${applied.join(', ')}`);
  });

const user = program.command('user').description('Manage user accounts.');
user
  .command('add <username>')
  .description('Create a user (or, with --admin, create or reset an admin). The password is read from stdin or prompted for.')
  .option('--admin', 'give the account the admin role')
  .action(async (username: string, options: { admin?: boolean }) => {
    if (!/^[a-z0-9_.-]{3,32}$/.test(username)) throw new InvalidArgumentError('username must be 3–32 characters of a-z, 0-9, _ . -');
    const password = await readPassword(`Password for ${username}: `);
    if (password.length < 8) throw new InvalidArgumentError('password must be at least 8 characters long');
    const { addUser, loadConfigOrExit } = await loadServer();
    const outcome = await addUser(loadConfigOrExit(), { username, password, admin: options.admin === true });
    console.log(`User ${username}${options.admin ? ' (admin)' : ''}: ${outcome}.`);
  });

user
  .command('revoke-tokens <username>')
  .description('Refuse every token issued to the user so far (on every instance within seconds); they log in again.')
  .action(async (username: string) => {
    const { loadConfigOrExit } = await loadServer();
    const { runUserRevokeTokens } = await import('./users/credentials.cli.js');
    console.log(await runUserRevokeTokens(loadConfigOrExit(), username));
  });

const token = program.command('token').description('Manage node enrollment tokens.');
token
  .command('create')
  .description('Create an enrollment token that lets new nodes register; it is printed once.')
  .option('--expires-in-hours <hours>', 'expire after this many hours (default: ENROLLMENT_TOKEN_TTL_HOURS, 168)', positive)
  .option('--max-uses <n>', 'register at most this many nodes (default: unlimited)', positiveInteger)
  .option('--note <text>', 'a note kept with the token (who it was given to)')
  .option(
    '--operator <username>',
    "a personal token: the nodes it registers belong to this user (copies on one operator's nodes count once); without it each node counts as its own operator",
  )
  .action(async (options: { expiresInHours?: number; maxUses?: number; note?: string; operator?: string }) => {
    const { loadConfigOrExit } = await loadServer();
    const { runTokenCreate } = await import('./users/credentials.cli.js');
    const created = await runTokenCreate(loadConfigOrExit(), options);
    console.log(created.token);
    if (created.expiresAt !== null) console.error(`Expires at ${new Date(created.expiresAt).toISOString()}.`);
    if (created.maxUses !== null) console.error(`Registers at most ${created.maxUses} node(s).`);
  });
token
  .command('list')
  .description('List enrollment tokens, newest first: id, state, uses, times and note (never the token).')
  .action(async () => {
    const { loadConfigOrExit } = await loadServer();
    const { runTokenList } = await import('./users/credentials.cli.js');
    console.log(await runTokenList(loadConfigOrExit()));
  });
token
  .command('revoke')
  .description('Revoke an enrollment token at once; the nodes it registered keep their own tokens.')
  .argument('<id>', "the token's id (dispatcher token list)", id)
  .action(async (tokenId: number) => {
    const { loadConfigOrExit } = await loadServer();
    const { runTokenRevoke } = await import('./users/credentials.cli.js');
    console.log(await runTokenRevoke(loadConfigOrExit(), tokenId));
  });

const node = program.command('node').description('Manage nodes and workers.');
node
  .command('approve')
  .description('Let a worker be rented once its SSH host key is proven (WORKER_APPROVAL=admin).')
  .argument('<node>', "the node's name or id")
  .action(async (ref: string) => {
    const { loadConfigOrExit } = await loadServer();
    const { runNodeApprove } = await import('./nodes/nodes.cli.js');
    console.log(await runNodeApprove(loadConfigOrExit(), ref));
  });

const importCommand = program.command('import').description('Load assets from catalog sources.');
importCommand
  .command('json <file>')
  .description("Import assets from a JSON file in the seeds' format: [{id, url, size_mb, priority, name}, …].")
  .action(async (file: string) => {
    const { importJsonFile, loadConfigOrExit } = await loadServer();
    const started = Date.now();
    const count = await importJsonFile(loadConfigOrExit(), file);
    const seconds = (Date.now() - started) / 1000;
    console.log(`Imported ${count} assets from ${file} in ${seconds.toFixed(1)} s.`);
  });

const discoverHelp = 'then ask each file of unknown size for it (HEAD, else a ranged GET; CATALOG_HEAD_CONCURRENCY at once)';

const catalogHelp = `
Requests are paced by CATALOG_REQUESTS_PER_SECOND and retried on 429/5xx/timeouts (CATALOG_MAX_RETRIES,
CATALOG_TIMEOUT_SECONDS). After a complete run without a text query (--q, --fq), assets of this source
that were not seen are flagged removed_from_source and raised by CATALOG_REMOVED_PRIORITY_BOOST; with
--org, only that organization's. Progress goes to stderr (a bar on a terminal, else a line per page),
the summary to stdout.
`;

importCommand
  .command('ckan <url>')
  .description("Import every resource of a CKAN portal's datasets (package_search, paged by start) as assets.")
  .option('--q <query>', 'Solr query (package_search q)')
  .option('--fq <filter>', 'Solr filter query (package_search fq)')
  .option('--org <name>', 'only this organization (adds fq organization:NAME)')
  .option('--rows <n>', 'datasets per page, 1–1000 (default 1000)', rows)
  .option('--discover-sizes', discoverHelp)
  .addHelpText('after', catalogHelp)
  .action(async (url: string, options: { q?: string; fq?: string; org?: string; rows?: number; discoverSizes?: boolean }) => {
    const { importCkanPortal, loadConfigOrExit } = await loadServer();
    await printSummary(await importCkanPortal(loadConfigOrExit(), url, options));
  });

importCommand
  .command('datagov')
  .description("Import every distribution of the new catalog.data.gov API's datasets (/search, paged by the after cursor) as assets.")
  .option('--q <query>', 'search text')
  .option('--org <slug>', 'only this organization (org_slug)')
  .option('--api-key <key>', 'api.data.gov key, sent as X-Api-Key (default: DATAGOV_API_KEY)')
  .option('--url <url>', "the API's base URL (default: DATAGOV_API_URL, https://catalog.data.gov)")
  .option('--per-page <n>', 'datasets per page, 1–1000 (default 1000)', rows)
  .option('--discover-sizes', discoverHelp)
  .addHelpText('after', catalogHelp)
  .action(async (options: { q?: string; org?: string; apiKey?: string; url?: string; perPage?: number; discoverSizes?: boolean }) => {
    const { importDatagovCatalog, loadConfigOrExit } = await loadServer();
    await printSummary(await importDatagovCatalog(loadConfigOrExit(), options));
  });

importCommand
  .command('dcat <location>')
  .description('Import every distribution (downloadURL, else accessURL) of a DCAT-US data.json, from a URL or a file, as assets.')
  .option('--discover-sizes', discoverHelp)
  .addHelpText('after', catalogHelp)
  .action(async (location: string, options: { discoverSizes?: boolean }) => {
    const { importDcatCatalog, loadConfigOrExit } = await loadServer();
    await printSummary(await importDcatCatalog(loadConfigOrExit(), location, options));
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`dispatcher: ${(error as Error).message}\n`);
  process.exit(1);
});
