/**
 * A token bucket shared by every download of an agent, so the bandwidth cap holds in total.
 * `take` returns how long to wait before passing the chunk on (0 when under the cap).
 */
export interface RateLimiter {
  take(bytes: number): number;
}

export function createRateLimiter(bytesPerSecond: number, now: () => number = Date.now): RateLimiter {
  // One second of burst: enough to keep a stream flowing, small enough to honour the cap.
  let available = bytesPerSecond;
  let last = now();
  return {
    take(bytes) {
      const current = now();
      available = Math.min(bytesPerSecond, available + ((current - last) / 1000) * bytesPerSecond);
      last = current;
      available -= bytes;
      return available >= 0 ? 0 : Math.ceil((-available / bytesPerSecond) * 1000);
    },
  };
}
