/**
 * A Retry-After header as milliseconds from `now`: delta-seconds, or an HTTP-date (which always
 * names its day and month, so bare numbers like "12.5" are not taken for dates). Undefined when
 * absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  const text = value?.trim() ?? '';
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = /[A-Za-z]/.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
