import type { SafeFetch } from '../agent/safe-fetch.js';

/** The bytes of one range a spot check reads of the source and asks of the holder. */
export const SPOT_CHECK_BYTES = 64 * 1024;
/** How long one range read of a source may take. */
const SOURCE_READ_MS = 30_000;

/** `count` ranges of at most 64 KiB at uniformly random offsets of a copy of `size` bytes. */
export function pickRanges(size: number, count: number, random: () => number): { offset: number; length: number }[] {
  const length = Math.min(SPOT_CHECK_BYTES, size);
  return Array.from({ length: Math.max(1, count) }, () => ({ offset: Math.floor(random() * (size - length + 1)), length }));
}

/**
 * The bytes of each range as the source serves them now: a 206 naming the range and the copy's
 * size (or a 200 of exactly the whole copy when the range is all of it). Anything else, or more
 * bytes than asked, means the source cannot be checked against.
 */
export async function readSourceRanges(
  sourceFetch: SafeFetch,
  url: string,
  size: number,
  ranges: { offset: number; length: number }[],
): Promise<{ bytes: Buffer[] } | { unavailable: string }> {
  const bytes: Buffer[] = [];
  for (const range of ranges) {
    const last = range.offset + range.length - 1;
    let response: Response;
    try {
      response = await sourceFetch(url, {
        headers: { range: `bytes=${range.offset}-${last}`, 'accept-encoding': 'identity' },
        signal: AbortSignal.timeout(SOURCE_READ_MS),
      });
    } catch (error) {
      return { unavailable: `the source did not answer: ${(error as Error).message}` };
    }
    const whole = response.status === 200 && range.offset === 0 && range.length === size;
    const named = response.status === 206 && response.headers.get('content-range') === `bytes ${range.offset}-${last}/${size}`;
    if (!whole && !named) {
      await response.body?.cancel().catch(() => undefined);
      return { unavailable: response.status === 200 ? 'the source serves no byte ranges' : `the source answered ${response.status} to a range` };
    }
    const body = await readAtMost(response, range.length);
    if (body === undefined || body.length !== range.length) return { unavailable: 'the source sent another length than the range asked for' };
    bytes.push(body);
  }
  return { bytes };
}

/** The body, or undefined once it runs past `limit` bytes (the rest is not read). */
async function readAtMost(response: Response, limit: number): Promise<Buffer | undefined> {
  if (!response.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return Buffer.concat(chunks);
      total += value.length;
      if (total > limit) return undefined;
      chunks.push(Buffer.from(value));
    }
  } catch {
    return undefined;
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
