import os from 'node:os';
import path from 'node:path';
import { parseAllowPrivate } from './safe-fetch.js';

export interface AgentConfig {
  apiEndpoint: string;
  enrollmentToken: string | undefined;
  nodeToken: string | undefined;
  dataDirectory: string;
  /** Undefined: the host name plus a short random suffix, chosen at the first registration and kept. */
  nodeName: string | undefined;
  sshPort: number | undefined;
  tags: Record<string, string>;
  concurrency: number;
  /** Bytes per second for all downloads together; undefined for no cap. */
  bandwidthLimit: number | undefined;
  /** Free bytes the agent never fills. */
  reserveBytes: number;
  heartbeatSeconds: number | undefined;
  pollSeconds: number;
  retries: number;
  /** Bytes per second the background re-hash of kept copies reads at most; 0: no scrub. */
  scrubBytesPerSecond: number;
  /** From the end of one full scrub pass to the start of the next. */
  scrubIntervalMs: number;
  /** AGENT_ALLOW_PRIVATE_NETWORKS: fetch from loopback/private addresses too (true), or from these networks. */
  allowPrivate: boolean | string[];
  /** Sent in the User-Agent of every download, so a source's operators can reach the campaign. */
  contact: string;
  /** Set on a worker machine (rentable over SSH): see README, "Setting up a worker". */
  worker: WorkerSetup | undefined;
}

export interface WorkerSetup {
  hostKeyFile: string;
  user: string;
  authorizedKeysFile: string;
}

/** Each setting: its flag (commander's camelCase key), its environment variable, and its parser. */
export const agentSettings = [
  { flag: 'apiEndpoint', env: 'API_ENDPOINT', help: 'control plane URL, e.g. https://dispatcher.example.org' },
  { flag: 'enrollmentToken', env: 'NODE_ENROLLMENT_TOKEN', help: 'enrollment token, for the first registration' },
  { flag: 'nodeToken', env: 'NODE_TOKEN', help: "this node's token, if it was registered elsewhere" },
  {
    flag: 'dataDirectory',
    env: 'DATA_DIRECTORY',
    // The name agents were first deployed with, still read so that their units and images keep working.
    formerly: { flag: 'dataDir', env: 'DATA_DIR' },
    help: "where copies and the node's identity are kept (default ./rescue-data; DATA_DIR and --data-dir are read too)",
  },
  { flag: 'nodeName', env: 'NODE_NAME', help: 'name to register under (default: the host name and a random suffix, kept in DATA_DIRECTORY)' },
  { flag: 'sshPort', env: 'MY_HOST_PORT', help: 'SSH port this machine advertises' },
  { flag: 'tags', env: 'NODE_TAGS', help: 'tags such as region=eu,site=lab (copies are spread across SPREAD_TAG)' },
  { flag: 'concurrency', env: 'AGENT_CONCURRENCY', help: 'downloads at once (default 3)' },
  { flag: 'bandwidthLimit', env: 'AGENT_BANDWIDTH_LIMIT_MB_S', help: 'cap on all downloads together, MiB/s (default: none)' },
  { flag: 'reserveGb', env: 'AGENT_RESERVE_GB', help: 'free space never used, GiB (default 1)' },
  { flag: 'heartbeatSeconds', env: 'AGENT_HEARTBEAT_SECONDS', help: 'heartbeat interval (default: what the control plane asks for)' },
  { flag: 'pollSeconds', env: 'AGENT_POLL_SECONDS', help: 'wait before asking again when there is no work (default 30)' },
  { flag: 'retries', env: 'AGENT_RETRIES', help: 'attempts per download before giving it back (default 3)' },
  { flag: 'scrubRate', env: 'AGENT_SCRUB_MB_S', help: 'background re-hash of kept copies, MiB/s; 0 turns it off (default 8)' },
  { flag: 'scrubIntervalHours', env: 'AGENT_SCRUB_INTERVAL_HOURS', help: 'wait between full re-hash passes, hours (default 24)' },
  {
    flag: 'allowPrivateNetworks',
    env: 'AGENT_ALLOW_PRIVATE_NETWORKS',
    help: 'also download from loopback and private addresses: true, or a list such as 10.1.0.0/16,192.168.5.7 (default false)',
  },
  { flag: 'contact', env: 'AGENT_CONTACT', help: 'a URL or mailto: address for source operators, sent in the User-Agent (default: API_ENDPOINT)' },
  {
    flag: 'hostKeyFile',
    env: 'WORKER_HOST_KEY_FILE',
    help: "worker: this machine's SSH host public key, e.g. /etc/ssh/ssh_host_ed25519_key.pub (makes it rentable; needs MY_HOST_PORT)",
  },
  { flag: 'workerUser', env: 'WORKER_SSH_USER', help: 'worker: the provisioning account the agent runs as (default dispatcher)' },
  {
    flag: 'authorizedKeys',
    env: 'WORKER_AUTHORIZED_KEYS',
    help: "worker: the provisioning account's authorized_keys file, written by dispatcher worker-setup (default ~/.ssh/authorized_keys)",
  },
] as const;

type AgentSetting = (typeof agentSettings)[number];
/** A setting's earlier names, still read after its own (flag first, then the environment). */
export type FormerNames = { flag: string; env: string };
const formerNamesOf = (setting: AgentSetting): FormerNames | undefined => ('formerly' in setting ? setting.formerly : undefined);

export type AgentFlags = Partial<Record<AgentSetting['flag'] | Extract<AgentSetting, { formerly: FormerNames }>['formerly']['flag'], string>>;

const MIB = 1024 * 1024;

/** Flags win over the environment. Every problem is collected, then thrown together. */
export function loadAgentConfig(flags: AgentFlags, env: Record<string, string | undefined>): AgentConfig {
  const problems: string[] = [];
  const value = (flag: keyof AgentFlags): string | undefined => {
    const setting = agentSettings.find((candidate) => candidate.flag === flag)!;
    const former = formerNamesOf(setting);
    const raw = flags[flag] ?? (former && flags[former.flag as keyof AgentFlags]) ?? env[setting.env] ?? (former && env[former.env]);
    return raw === undefined || raw === '' ? undefined : raw;
  };
  const number = (flag: keyof AgentFlags, fallback: number | undefined, min: number, max: number, integer = true): number | undefined => {
    const raw = value(flag);
    if (raw === undefined) return fallback;
    const parsed = Number(raw);
    if (!Number.isFinite(parsed) || parsed < min || parsed > max || (integer && !Number.isInteger(parsed))) {
      const setting = agentSettings.find((candidate) => candidate.flag === flag)!;
      problems.push(`${setting.env} (--${kebab(flag)}) must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got "${raw}"`);
      return fallback;
    }
    return parsed;
  };
  const apiEndpoint = value('apiEndpoint');
  if (!apiEndpoint) problems.push("API_ENDPOINT (--api-endpoint) is required: the control plane's URL");
  else if (!/^https?:\/\/\S+$/.test(apiEndpoint)) problems.push(`API_ENDPOINT must be an http(s) URL, got "${apiEndpoint}"`);
  const tags: Record<string, string> = {};
  for (const pair of (value('tags') ?? '').split(',').filter(Boolean)) {
    const [key, tagValue] = pair.split('=');
    if (!key || !tagValue || !/^[a-z][a-z0-9_-]{0,31}$/.test(key.trim())) problems.push(`NODE_TAGS must look like region=eu,site=lab, got "${pair}"`);
    else tags[key.trim()] = tagValue.trim();
  }
  const nodeName = value('nodeName');
  if (nodeName !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/.test(nodeName))
    problems.push(`NODE_NAME must be 1–64 of letters, digits, _ . : -, got "${nodeName}"`);
  let allowPrivate: boolean | string[] = false;
  try {
    allowPrivate = parseAllowPrivate(value('allowPrivateNetworks'));
  } catch (error) {
    problems.push(`${(error as Error).message} (--allow-private-networks)`);
  }
  const contact = value('contact') ?? apiEndpoint ?? '';
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (/[\u0000-\u001f\u007f()]/.test(contact))
    problems.push(`AGENT_CONTACT must be a URL or an e-mail address, without control characters or parentheses, got "${contact}"`);
  const bandwidth = number('bandwidthLimit', undefined, 0.001, 1_000_000, false);
  const hostKeyFile = value('hostKeyFile');
  const workerUser = value('workerUser') ?? 'dispatcher';
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(workerUser)) problems.push(`WORKER_SSH_USER must be a user name (a-z, 0-9, _ -), got "${workerUser}"`);
  if (hostKeyFile && value('sshPort') === undefined)
    problems.push('WORKER_HOST_KEY_FILE needs MY_HOST_PORT: the SSH port the control plane reaches this worker on');
  const config: AgentConfig = {
    apiEndpoint: apiEndpoint ?? '',
    enrollmentToken: value('enrollmentToken'),
    nodeToken: value('nodeToken'),
    dataDirectory: path.resolve(value('dataDirectory') ?? 'rescue-data'),
    nodeName,
    sshPort: number('sshPort', undefined, 1, 65535),
    tags,
    concurrency: number('concurrency', 3, 1, 64) as number,
    bandwidthLimit: bandwidth === undefined ? undefined : Math.round(bandwidth * MIB),
    reserveBytes: Math.round((number('reserveGb', 1, 0, 1_000_000, false) as number) * 1024 * MIB),
    heartbeatSeconds: number('heartbeatSeconds', undefined, 1, 3600),
    pollSeconds: number('pollSeconds', 30, 0.1, 86_400, false) as number,
    retries: number('retries', 3, 1, 100) as number,
    scrubBytesPerSecond: Math.round((number('scrubRate', 8, 0, 1_000_000, false) as number) * MIB),
    scrubIntervalMs: Math.round((number('scrubIntervalHours', 24, 0.01, 87_600, false) as number) * 3_600_000),
    allowPrivate,
    contact,
    worker: hostKeyFile
      ? {
          hostKeyFile: path.resolve(hostKeyFile),
          user: workerUser,
          authorizedKeysFile: path.resolve(value('authorizedKeys') ?? path.join(os.homedir(), '.ssh', 'authorized_keys')),
        }
      : undefined,
  };
  if (problems.length > 0) throw new Error(`Invalid agent configuration:\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
  return config;
}

/** A setting's command-line flag as typed: `dataDirectory` is `data-directory`. */
export function kebab(flag: string): string {
  return flag.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
}
