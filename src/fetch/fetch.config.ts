import type { Selection } from './restore-client.js';

/** The flags of `dispatcher fetch`, as commander gives them. */
export interface FetchFlags {
  out?: string;
  bag?: string;
  dataset?: string;
  organization?: string;
  all?: boolean;
  apiEndpoint?: string;
  token?: string;
}

export type FetchMode = { kind: 'assets'; ids: string[]; out: string | undefined } | { kind: 'bag'; dir: string; selection: Selection };

export interface FetchConfig {
  apiEndpoint: string;
  /** Undefined: no Authorization at all (the server's RESTORE_ACCESS=public). */
  token: string | undefined;
  mode: FetchMode;
}

/** Flags win over the environment (API_ENDPOINT, DISPATCHER_TOKEN). Every problem is collected, then thrown together. */
export function loadFetchConfig(ids: string[], flags: FetchFlags, env: Record<string, string | undefined>): FetchConfig {
  const problems: string[] = [];
  const apiEndpoint = flags.apiEndpoint || env.API_ENDPOINT || undefined;
  if (!apiEndpoint) problems.push("API_ENDPOINT (--api-endpoint) is required: the control plane's URL");
  else if (!/^https?:\/\/\S+$/.test(apiEndpoint) || !URL.canParse(apiEndpoint)) problems.push(`API_ENDPOINT must be an http(s) URL, got "${apiEndpoint}"`);
  const token = flags.token || env.DISPATCHER_TOKEN || undefined;
  if (token !== undefined && !/^[\x21-\x7e]+$/.test(token))
    problems.push('DISPATCHER_TOKEN (--token) must be a token from POST /auth/login: printable ASCII without spaces');
  const selection: Selection = {
    ...(flags.organization !== undefined ? { organization: flags.organization } : {}),
    ...(flags.dataset !== undefined ? { dataset: flags.dataset } : {}),
  };
  const selects = flags.all === true || Object.keys(selection).length > 0;
  if (flags.all === true && Object.keys(selection).length > 0) problems.push('--all exports every asset: leave out --dataset and --organization, or --all');
  if (flags.dataset === '' || flags.organization === '') problems.push('--dataset and --organization take a name');
  if (ids.length > 0 && (selects || flags.bag !== undefined)) problems.push('give asset ids, or --dataset/--organization/--all with --bag, not both');
  else if (ids.length === 0 && !selects)
    problems.push('name the assets to fetch (ASSET_ID…), or a bag to export (--dataset NAME, --organization ORG or --all, with --bag DIR)');
  if (selects && flags.bag === undefined) problems.push('--dataset, --organization and --all export a BagIt bag: say where with --bag DIR');
  if (flags.bag !== undefined && flags.out !== undefined) problems.push('--out is for asset ids; a bag goes to --bag DIR');
  if (problems.length > 0) throw new Error(`Invalid fetch:\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
  const mode: FetchMode = flags.bag !== undefined ? { kind: 'bag', dir: flags.bag, selection } : { kind: 'assets', ids, out: flags.out };
  return { apiEndpoint: apiEndpoint!, token, mode };
}

/** How a selection is written in bag-info.txt (Dispatcher-Selection), to tell a bag's export from another's. */
export function describeSelection(selection: Selection): string {
  const parts = [
    ...(selection.organization !== undefined ? [`organization=${selection.organization}`] : []),
    ...(selection.dataset !== undefined ? [`dataset=${selection.dataset}`] : []),
  ];
  return parts.length === 0 ? 'all' : parts.join(' ');
}
