/**
 * The host a source URL is fetched from, as politeness counts it: the URL's host with its port
 * when that is not the scheme's default, lowercased (WHATWG URL parsing already lowercases and
 * normalises names). Null for a URL that does not parse.
 */
export function sourceHostOf(url: string): string | null {
  try {
    const host = new URL(url).host;
    return host === '' ? null : host;
  } catch {
    return null;
  }
}

/**
 * The source host of an asset whose source is gone while copies remain: new copies are made from
 * those copies through the control plane (a restore), so the per-host cap, SOURCE_HOST_MAX_ACTIVE,
 * is what bounds the repair traffic. No URL has this host.
 */
export const PEERS_HOST = '(peers)';

/** Where a node gets the bytes of an asset repaired from its copies, relative to the control plane. */
export function peersUrlOf(assetId: string): string {
  return `/assets/${encodeURIComponent(assetId)}/content?prefer_source=false`;
}
