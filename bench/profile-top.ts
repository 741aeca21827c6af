/**
 * Self time per function of a V8 .cpuprofile (written by `node --cpu-prof`).
 * Also runnable alone: npx tsx bench/profile-top.ts FILE.cpuprofile [N]
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTimeEntry {
  name: string;
  /** Where it is: a project file, a package, or a Node internal module. */
  location: string;
  selfMs: number;
  percent: number;
}

/** Shortens a script URL to what a reader recognizes: `dist/x.js:12`, `pkg: fastify/lib/y.js`, `node:internal/…`. */
function describeLocation(url: string, line: number): string {
  if (url === '') return '';
  const file = url.startsWith('file://') ? fileURLToPath(url) : url;
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(file);
  if (inPackage) return `pkg ${inPackage[1]}/${inPackage[2]}:${line + 1}`;
  if (path.isAbsolute(file)) return `${path.relative(process.cwd(), file)}:${line + 1}`;
  return `${file}:${line + 1}`;
}

/** Which package (or `dispatcher`, `node`, or a V8 pseudo-frame) a function belongs to. */
function ownerOf(node: ProfileNode): string {
  const { url, functionName } = node.callFrame;
  if (url === '') return functionName || '(native)';
  const inPackage = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (inPackage) return inPackage[1] as string;
  if (url.startsWith('node:')) return 'node internals';
  return 'dispatcher';
}

function selfTimes(profile: CpuProfile): { byNode: Map<number, number>; totalMs: number } {
  const byNode = new Map<number, number>();
  let total = 0;
  profile.samples.forEach((nodeId, index) => {
    const ms = (profile.timeDeltas[index] ?? 0) / 1000;
    byNode.set(nodeId, (byNode.get(nodeId) ?? 0) + ms);
    total += ms;
  });
  return { byNode, totalMs: total };
}

export function readProfile(file: string): CpuProfile {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
}

/** Top `limit` functions by self time; the same function reached by several paths is summed. */
export function topSelfTime(profile: CpuProfile, limit = 15): { totalMs: number; entries: SelfTimeEntry[] } {
  const { byNode, totalMs } = selfTimes(profile);
  const byFunction = new Map<string, SelfTimeEntry>();
  for (const node of profile.nodes) {
    const ms = byNode.get(node.id);
    if (!ms) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    const location = describeLocation(url, lineNumber);
    const key = `${name}\u0000${location}`;
    const entry = byFunction.get(key) ?? { name, location, selfMs: 0, percent: 0 };
    entry.selfMs += ms;
    byFunction.set(key, entry);
  }
  const entries = [...byFunction.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, limit);
  for (const entry of entries) entry.percent = (entry.selfMs / totalMs) * 100;
  return { totalMs, entries };
}

/** Self time per package / owner: shows at a glance whether time goes to SQL, HTTP, or our code. */
export function selfTimeByOwner(profile: CpuProfile): { owner: string; selfMs: number; percent: number }[] {
  const { byNode, totalMs } = selfTimes(profile);
  const byOwner = new Map<string, number>();
  for (const node of profile.nodes) {
    const ms = byNode.get(node.id);
    if (ms) byOwner.set(ownerOf(node), (byOwner.get(ownerOf(node)) ?? 0) + ms);
  }
  return [...byOwner.entries()].map(([owner, selfMs]) => ({ owner, selfMs, percent: (selfMs / totalMs) * 100 })).sort((a, b) => b.selfMs - a.selfMs);
}

export function formatProfile(file: string, limit = 15): string {
  const profile = readProfile(file);
  const { totalMs, entries } = topSelfTime(profile, limit);
  const lines = [`${path.basename(file)}: ${(totalMs / 1000).toFixed(1)} s sampled`, '  self ms      %  function  (location)'];
  for (const entry of entries) {
    lines.push(`  ${entry.selfMs.toFixed(0).padStart(7)} ${entry.percent.toFixed(1).padStart(6)}  ${entry.name}  (${entry.location || 'V8'})`);
  }
  lines.push('  by owner:');
  for (const owner of selfTimeByOwner(profile).slice(0, 12)) {
    lines.push(`  ${owner.selfMs.toFixed(0).padStart(7)} ${owner.percent.toFixed(1).padStart(6)}  ${owner.owner}`);
  }
  return lines.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [file, limit] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: npx tsx bench/profile-top.ts FILE.cpuprofile [N]\n');
    process.exit(2);
  }
  console.log(formatProfile(file, limit ? Number(limit) : 15));
}
