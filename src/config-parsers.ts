import { isIP } from 'node:net';

/*
 * The parsers of configuration values: each turns the raw text of a variable into its value or
 * throws a message that completes "NAME …" (e.g. "must be an integer, got …").
 */

export const HOUR = 3_600_000;

export function integer(min: number, max: number) {
  return (raw: string): number => {
    if (!/^-?\d+$/.test(raw.trim())) throw new Error(`must be an integer, got "${raw}"`);
    const value = Number(raw);
    if (value < min || value > max) throw new Error(`must be between ${min} and ${max}, got ${value}`);
    return value;
  };
}

export function positiveNumber(max: number) {
  return (raw: string): number => {
    const value = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(value) || value <= 0 || value > max) {
      throw new Error(`must be a number above 0 and at most ${max}, got "${raw}"`);
    }
    return value;
  };
}

export function oneOf<T extends string>(...allowed: T[]) {
  return (raw: string): T => {
    const value = raw.trim().toLowerCase();
    if (!(allowed as string[]).includes(value)) throw new Error(`must be one of ${allowed.join(', ')}, got "${raw}"`);
    return value as T;
  };
}

export const text = (raw: string) => raw;

export function boolean(raw: string): boolean {
  const value = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  throw new Error(`must be true or false, got "${raw}"`);
}

export function trustedProxies(raw: string): boolean | string {
  const value = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  const entries = value.split(',').map((entry) => entry.trim());
  const valid = (entry: string) => {
    const [address, prefix, ...rest] = entry.split('/');
    const family = isIP(address ?? '');
    if (family === 0 || rest.length > 0) return false;
    return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128));
  };
  const wrong = entries.filter((entry) => !valid(entry));
  if (wrong.length > 0) throw new Error(`must be true, false, or proxy addresses and CIDRs separated by commas; not an address: ${wrong.join(', ')}`);
  return entries.join(',');
}

export function databaseUrl(raw: string): string | undefined {
  if (raw.trim() === '') return undefined;
  if (!/^postgres(ql)?:\/\//.test(raw)) throw new Error('must be a postgres:// or postgresql:// URL (leave it unset for embedded SQLite)');
  return raw;
}

export function identifier(raw: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(raw)) throw new Error('must be a lower-case SQL identifier (a-z, 0-9, _)');
  return raw;
}

export function replicaRules(raw: string): [number, number][] {
  const rules = raw.split(',').map((rule) => {
    const match = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(rule);
    if (!match) throw new Error(`must look like "8:3,1:2" (priority threshold:replicas), got "${raw}"`);
    const [threshold, replicas] = [Number(match[1]), Number(match[2])];
    if (threshold < 1 || threshold > 10 || replicas < 1 || replicas > 100) throw new Error(`thresholds must be 1–10 and replicas 1–100, got "${rule}"`);
    return [threshold, replicas] as [number, number];
  });
  if (!rules.some(([threshold]) => threshold === 1)) throw new Error('must have a rule for threshold 1, so every priority is covered');
  return rules.sort((a, b) => b[0] - a[0]);
}

export function httpUrl(raw: string): string {
  if (!/^https?:\/\/[^\s/]+\S*$/.test(raw.trim())) throw new Error(`must be an http(s) URL, got "${raw}"`);
  return raw.trim().replace(/\/+$/, '');
}

export function secret(raw: string): string {
  if (raw.length < 32) throw new Error('must be at least 32 characters long');
  return raw;
}

export function username(raw: string): string {
  if (!/^[a-z0-9_.-]{3,32}$/.test(raw)) throw new Error('must be 3–32 characters of a-z, 0-9, _ . -');
  return raw;
}

export function password(raw: string): string {
  if (raw.length < 8) throw new Error('must be at least 8 characters long');
  return raw;
}

export const hoursToMs = (parse: (raw: string) => number) => (raw: string) => Math.round(parse(raw) * HOUR);

const durationUnits: Record<string, number> = { s: 1000, m: 60_000, h: HOUR, d: 24 * HOUR };

/** A duration such as `90s`, `30m`, `6h` or `1.5d`, in milliseconds. */
export function duration(minMs: number, maxMs: number) {
  return (raw: string): number => {
    const match = /^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$/.exec(raw);
    if (!match) throw new Error(`must be a duration such as 30m, 6h or 1d, got "${raw}"`);
    const ms = Math.round(Number(match[1]) * (durationUnits[match[2] as string] as number));
    if (ms < minMs || ms > maxMs) throw new Error(`must be between ${minMs / 60_000} minutes and ${maxMs / (24 * HOUR)} days, got "${raw}"`);
    return ms;
  };
}
