import crypto from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { printable } from '../lib/printable.js';

/** A file of the payload: `path` is relative to the bag, with `/` separators, under `data/`. */
export interface PayloadFile {
  path: string;
  sha256: string;
  bytes: number;
}

/** A tag file of our own (beside bagit.txt), listed in the tag manifest like the others. */
export interface TagFile {
  name: string;
  text: string;
}

export const BAGIT_TXT = 'BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n';
export const PAYLOAD_MANIFEST = 'manifest-sha256.txt';
export const TAG_MANIFEST = 'tagmanifest-sha256.txt';

/** RFC 8493 §2.1.3: in a manifest's file paths CR, LF and `%` (and only those) are percent-encoded. */
export function encodeManifestPath(filePath: string): string {
  return filePath.replace(/[%\r\n]/g, (character) => `%${character.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** `<sha256>  <path>` lines, sorted by path so that the same payload always gives the same file. */
export function manifestText(entries: { path: string; sha256: string }[]): string {
  return [...entries]
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    .map((entry) => `${entry.sha256.toLowerCase()}  ${encodeManifestPath(entry.path)}\n`)
    .join('');
}

/** `Payload-Oxum`: the payload's octet count and file count, `<octets>.<files>`. */
export function payloadOxum(files: PayloadFile[]): string {
  return `${files.reduce((sum, file) => sum + file.bytes, 0)}.${files.length}`;
}

/** `Bag-Size` as RFC 8493's examples write it: decimal units (`42.6 GB`). */
export function bagSize(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) [value, unit] = [value / 1000, unit + 1];
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * bag-info.txt: one `Label: value` line per field, labels repeatable. Values come from the server,
 * so each is made printable, which also keeps it on one line (no CR or LF can start a new field).
 */
export function bagInfoText(fields: [label: string, value: string][]): string {
  return fields
    .map(([label, value]) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(label)) throw new Error(`not a bag-info label: ${label}`);
      return `${label}: ${printable(value).trim()}\n`;
    })
    .join('');
}

/** The values of `label` in a bag-info.txt (continuation lines joined), to compare with an earlier export. */
export function readBagInfoField(text: string, label: string): string[] {
  const unfolded = text.replace(/\r\n?/g, '\n').replace(/\n[ \t]+/g, ' ');
  return unfolded
    .split('\n')
    .filter((line) => line.startsWith(`${label}:`))
    .map((line) => line.slice(label.length + 1).trim());
}

/**
 * Writes the tag files of a finished bag: the payload manifest, bagit.txt, bag-info.txt and `extra`,
 * then the tag manifest over all of them. Each is written to a temporary file and renamed, so a
 * reader sees the old version or the new one, and the tag manifest last, so it never names a
 * file that is not yet there.
 */
export async function writeBagTags(bagDir: string, payload: PayloadFile[], info: string, extra: TagFile[] = []): Promise<void> {
  const tags: TagFile[] = [
    { name: 'bagit.txt', text: BAGIT_TXT },
    { name: 'bag-info.txt', text: info },
    { name: PAYLOAD_MANIFEST, text: manifestText(payload) },
    ...extra,
  ];
  for (const tag of tags) await writeAtomically(path.join(bagDir, tag.name), tag.text);
  const tagEntries = tags.map((tag) => ({ path: tag.name, sha256: crypto.createHash('sha256').update(tag.text).digest('hex') }));
  await writeAtomically(path.join(bagDir, TAG_MANIFEST), manifestText(tagEntries));
}

/** Removes the manifests of an earlier export: until this one finishes, the directory is no complete bag. */
export async function removeBagManifests(bagDir: string): Promise<void> {
  await fsp.rm(path.join(bagDir, TAG_MANIFEST), { force: true });
  await fsp.rm(path.join(bagDir, PAYLOAD_MANIFEST), { force: true });
}

async function writeAtomically(file: string, text: string): Promise<void> {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await fsp.writeFile(temporary, text, 'utf8');
  await fsp.rename(temporary, file);
}
