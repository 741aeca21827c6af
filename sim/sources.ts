import type { SafeFetch } from '../src/agent/safe-fetch.js';
import type { Clock } from '../src/clock.js';
import { contentOf, sourceStatus, type World } from './world.js';

/**
 * The portals as the control plane's spot checks and audits see them: a 206 with the asset's bytes
 * for a range while its source lives, 404 once it vanished, 503 while its portal is dark.
 */
export function createSourceFetch(world: World, clock: Clock): SafeFetch {
  return async (url, init) => {
    const id = new URL(url).pathname.slice(1).replace(/\.dat$/, '');
    const asset = world.assetsById.get(id);
    if (!asset) return new Response(null, { status: 404 });
    const status = sourceStatus(world, asset, clock.now());
    if (status !== 200) return new Response(null, { status });
    const range = /^bytes=(\d+)-(\d+)$/.exec(init.headers?.range ?? '');
    if (!range) return new Response(new Uint8Array(contentOf(id, 0, Math.min(asset.bytes, 65_536))), { status: 200 });
    const offset = Number(range[1]);
    const last = Math.min(Number(range[2]), asset.bytes - 1);
    return new Response(new Uint8Array(contentOf(id, offset, last - offset + 1)), {
      status: 206,
      headers: { 'content-range': `bytes ${offset}-${last}/${asset.bytes}` },
    });
  };
}
