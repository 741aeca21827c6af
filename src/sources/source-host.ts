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
