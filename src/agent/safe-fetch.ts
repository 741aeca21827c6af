import dns from 'node:dns';
import net from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';

export interface SafeFetchPolicy {
  /** false: refuse loopback, link-local, private (RFC 1918), CGNAT 100.64/10, ULA fc00::/7, unspecified, multicast/broadcast, IPv4-mapped IPv6 of those, etc. true: allow everything. A list: allow these CIDRs/addresses in addition to public ones (e.g. a campus mirror), refuse the rest of the private space. */
  allowPrivate: boolean | string[];
  userAgent: string;
  /** Default 10. */
  maxRedirects?: number;
}

export interface SafeFetchInit {
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export type SafeFetch = (url: string, init: SafeFetchInit) => Promise<Response>;

/** Resolves every address of a name; the one resolution used both to check and to connect. */
export type ResolveAll = (hostname: string, options: dns.LookupOptions) => Promise<dns.LookupAddress[]>;

export class RefusedDestinationError extends Error {
  readonly code = 'REFUSED_DESTINATION';
}

const ALLOW_HINT = 'set AGENT_ALLOW_PRIVATE_NETWORKS=true or list the network to allow it';
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NEVER_SENT_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization']);

/** Address space that is not globally reachable (IANA special-purpose registries), refused unless allowed. */
const RESERVED_RANGES: ReadonlyArray<readonly [string, number, 'ipv4' | 'ipv6']> = [
  ['0.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['127.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.0.2.0', 24, 'ipv4'],
  ['192.88.99.0', 24, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['198.51.100.0', 24, 'ipv4'],
  ['203.0.113.0', 24, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  // ::/96 holds the unspecified address, loopback and the deprecated IPv4-compatible form.
  ['::', 96, 'ipv6'],
  ['64:ff9b:1::', 48, 'ipv6'],
  ['100::', 64, 'ipv6'],
  ['2001:db8::', 32, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['fec0::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
];
const reserved = buildBlockList(RESERVED_RANGES.map(([network, prefix]) => `${network}/${prefix}`));

/**
 * Returns a fetch that connects only to addresses `policy` allows, checked on the address each
 * connection actually uses (after DNS) on the first request and on every redirect hop. Every hop
 * is a GET with the same headers, so Range/If-Range survive redirects; credentials are never sent.
 */
export function createSafeFetch(policy: SafeFetchPolicy, resolve: ResolveAll = resolveWithDns): SafeFetch {
  const isAllowed = createAddressPolicy(policy.allowPrivate);
  const dispatcher = new Agent({ connect: { lookup: createGuardedLookup(isAllowed, resolve) } });
  const maxRedirects = policy.maxRedirects ?? 10;
  return async (url, init) => {
    const headers = buildHeaders(init.headers ?? {}, policy.userAgent);
    let current = parseUrl(url);
    let previous: URL | undefined;
    for (let redirects = 0; ; redirects++) {
      const response = await explainHop(previous, current, async () => {
        assertDestination(current, isAllowed);
        return sendUnwrapped(() => undiciFetch(current, { headers, signal: init.signal, redirect: 'manual', dispatcher }));
      });
      const location = REDIRECT_STATUSES.has(response.status) ? response.headers.get('location') : null;
      // undici's Response and the global one are typed by different undici releases; the object is a standard Response.
      if (location === null) return response as unknown as Response;
      await response.body?.cancel();
      if (redirects >= maxRedirects) throw new Error(`gave up on ${url} after ${maxRedirects} redirects (last hop ${current.href})`);
      previous = current;
      current = parseUrl(location, current);
    }
  };
}

/** A refusal on a redirect hop says so: the URL in the catalog was allowed, where it led was not. */
async function explainHop<T>(from: URL | undefined, to: URL, hop: () => Promise<T>): Promise<T> {
  try {
    return await hop();
  } catch (error) {
    if (from === undefined || !(error instanceof RefusedDestinationError)) throw error;
    throw new RefusedDestinationError(`${from.host} redirected to ${to.href}: ${error.message}`);
  }
}

/** Parses AGENT_ALLOW_PRIVATE_NETWORKS: "true"/"false"/"" or a comma list of CIDRs or addresses; throws a clear Error on a malformed entry. */
export function parseAllowPrivate(raw: string | undefined): boolean | string[] {
  const value = (raw ?? '').trim();
  if (value === '' || value.toLowerCase() === 'false') return false;
  if (value.toLowerCase() === 'true') return true;
  const entries = value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  const malformed = entries.filter((entry) => !isAddressOrCidr(entry));
  if (malformed.length > 0) {
    throw new Error(
      `AGENT_ALLOW_PRIVATE_NETWORKS: expected true, false or a comma list of IP addresses/CIDRs, got ${malformed.map((entry) => JSON.stringify(entry)).join(', ')}`,
    );
  }
  return entries;
}

/** Returns whether an IP address may be connected to; IPv6 forms embedding an IPv4 address are judged by that address too. */
export function createAddressPolicy(allowPrivate: boolean | string[]): (address: string) => boolean {
  if (allowPrivate === true) return () => true;
  const allowed = buildBlockList(allowPrivate === false ? [] : allowPrivate);
  return (raw) => {
    const address = stripZone(raw);
    if (net.isIP(address) === 0) return false;
    const embedded = readEmbeddedIPv4(address);
    if (matches(allowed, address) || (embedded !== null && matches(allowed, embedded))) return true;
    return !matches(reserved, address) && (embedded === null || !matches(reserved, embedded));
  };
}

/**
 * Returns a `net` lookup that resolves every address and refuses when any is not allowed, so the
 * address checked is the address connected to: a name cannot rebind between check and connect.
 */
export function createGuardedLookup(isAllowed: (address: string) => boolean, resolve: ResolveAll): net.LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, options).then(
      (addresses) => {
        const refused = addresses.find((entry) => !isAllowed(entry.address));
        const first = addresses[0];
        if (refused) callback(refuseAddress(hostname, refused.address), '', 0);
        else if (!first) callback(Object.assign(new Error(`no address found for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
        else if (options.all) callback(null, addresses);
        else callback(null, first.address, first.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    );
  };
}

function resolveWithDns(hostname: string, options: dns.LookupOptions): Promise<dns.LookupAddress[]> {
  return dns.promises.lookup(hostname, { ...options, all: true });
}

function assertDestination(url: URL, isAllowed: (address: string) => boolean): void {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RefusedDestinationError(`refused to fetch ${url.href}: only http and https URLs are fetched`);
  }
  // IP literals skip the lookup, so they are checked here; WHATWG parsing has already turned forms
  // like 0x7f.1, 2130706433 and [::ffff:127.0.0.1] into a canonical address.
  const address = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (net.isIP(address) !== 0 && !isAllowed(address)) throw refuseAddress(url.hostname, address);
}

/** Undici reports connect failures as TypeError('fetch failed') with the reason as `cause`; a refusal is rethrown as itself. */
async function sendUnwrapped<T>(send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (error) {
    for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) {
      if (cause instanceof RefusedDestinationError) throw cause;
    }
    throw error;
  }
}

function buildHeaders(given: Record<string, string>, userAgent: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(given)) {
    if (!NEVER_SENT_HEADERS.has(name.toLowerCase())) headers[name.toLowerCase()] = value;
  }
  headers['user-agent'] = userAgent;
  return headers;
}

function parseUrl(url: string, base?: URL): URL {
  try {
    return new URL(url, base);
  } catch {
    throw new Error(base ? `invalid redirect Location ${JSON.stringify(url)} from ${base.href}` : `invalid URL ${JSON.stringify(url)}`);
  }
}

function refuseAddress(host: string, address: string): RefusedDestinationError {
  const shown = host === address || host === `[${address}]` ? address : `${host} (${address})`;
  return new RefusedDestinationError(`refused to fetch from ${shown} (loopback/private address); ${ALLOW_HINT}`);
}

/** The IPv4 address inside an IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address. */
function readEmbeddedIPv4(address: string): string | null {
  if (net.isIPv6(address) === false) return null;
  const groups = expandIPv6(address);
  const isMapped = groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff;
  const isNat64 = groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((group) => group === 0);
  if (isMapped || isNat64) return formatIPv4(groups[6] ?? 0, groups[7] ?? 0);
  if (groups[0] === 0x2002) return formatIPv4(groups[1] ?? 0, groups[2] ?? 0);
  return null;
}

function expandIPv6(address: string): number[] {
  // URL parsing rewrites a dotted IPv4 tail as two hex groups, leaving only hex groups and `::`.
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const [head = '', tail] = canonical.split('::');
  const split = (part: string) => (part === '' ? [] : part.split(':').map((group) => parseInt(group, 16)));
  if (tail === undefined) return split(head);
  const [left, right] = [split(head), split(tail)];
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

function formatIPv4(high: number, low: number): string {
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
}

function isAddressOrCidr(entry: string): boolean {
  const [address = '', prefix, ...rest] = entry.split('/');
  const family = net.isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

function buildBlockList(entries: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const entry of entries) {
    const [address = '', prefix] = entry.split('/');
    const family = net.isIP(address) === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

function matches(list: net.BlockList, address: string): boolean {
  return list.check(address, net.isIP(address) === 4 ? 'ipv4' : 'ipv6');
}

function stripZone(address: string): string {
  const zone = address.indexOf('%');
  return zone === -1 ? address : address.slice(0, zone);
}
