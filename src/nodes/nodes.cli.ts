import { systemClock, toIso } from '../clock.js';
import type { Config } from '../config.js';
import { withDatabase } from '../main.js';
import { approveNode } from './nodes.service.js';

/** `dispatcher node approve NAME|ID`: what to print. */
export async function runNodeApprove(config: Config, ref: string): Promise<string> {
  const { node, approved } = await withDatabase(config, ({ db }) =>
    approveNode(db, { ref: /^\d+$/.test(ref) ? Number(ref) : ref, actor: 'cli', now: systemClock.now() }),
  );
  const state =
    node.host_key_verified_at === null
      ? 'it is rented once the control plane has proven its SSH host key'
      : `its host key was proven at ${toIso(node.host_key_verified_at)}`;
  return `${approved ? 'Approved' : 'Already approved'}: node ${node.name} (id ${node.id}); ${state}.`;
}
