import { printable } from '../lib/printable.js';

/**
 * Names come from the server (an asset's name, organization, dataset): each becomes one path
 * segment that cannot climb out of the directory it is written to, hide itself, or break a
 * terminal. Characters Windows refuses are replaced too, since bags travel.
 */
const NOT_IN_NAMES = /[/\\:*?"<>|]/g;
const RESERVED_ON_WINDOWS = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.|$)/i;
/** Most file systems allow 255 bytes per name: this leaves room for `-NN` and `.part.json`. */
const MAX_NAME_BYTES = 200;
const EXTENSION = /\.[A-Za-z0-9]{1,10}$/;

function clean(name: string): string {
  const text = printable(name.normalize('NFC'))
    .replace(NOT_IN_NAMES, '_')
    .trim()
    .replace(/^\.+/, (dots) => '_'.repeat(dots.length))
    .replace(/[. ]+$/, '');
  const safe = RESERVED_ON_WINDOWS.test(text) ? `_${text}` : text;
  return truncate(safe);
}

/**
 * `name` as one safe path segment: no separators, no control or bidirectional characters, never
 * `.` or `..` nor hidden (leading dots become `_`), NFC, at most 200 bytes (the extension kept).
 * When nothing is left, `fallback` cleaned the same way, else `_`.
 */
export function safeSegment(name: string | null | undefined, fallback: string): string {
  return clean(name ?? '') || clean(fallback) || '_';
}

function truncate(name: string): string {
  if (Buffer.byteLength(name) <= MAX_NAME_BYTES) return name;
  const [stem, extension] = splitExtension(name);
  let kept = '';
  for (const character of stem) {
    if (Buffer.byteLength(kept + character + extension) > MAX_NAME_BYTES) break;
    kept += character;
  }
  return kept + extension;
}

function splitExtension(name: string): [string, string] {
  const extension = EXTENSION.exec(name)?.[0] ?? '';
  return extension.length < name.length ? [name.slice(0, name.length - extension.length), extension] : [name, ''];
}

/** `name`, then `name-2`, `name-3`… with the number before the extension (`data-2.csv`). */
export function* nameVariants(name: string): Generator<string> {
  yield name;
  const [stem, extension] = splitExtension(name);
  for (let number = 2; ; number += 1) yield `${stem}-${number}${extension}`;
}

/**
 * The first variant of `name` whose `key(variant)` is not in `taken`, added to it. Keys are
 * lower-cased, so two names differing only in case stay apart on macOS and Windows too.
 */
export function claimName(name: string, taken: Set<string>, key: (variant: string) => string = (variant) => variant): string {
  for (const variant of nameVariants(name)) {
    const claimed = key(variant).toLowerCase();
    if (taken.has(claimed)) continue;
    taken.add(claimed);
    return variant;
  }
  throw new Error('unreachable: nameVariants never ends');
}
