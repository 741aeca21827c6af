import { AppError } from '../errors.js';
import { findNodeById, findNodeByName } from '../nodes/nodes.repository.js';
import { findOrCreateNode } from '../nodes/nodes.service.js';
import { actorOf, isAdmin, type Principal } from './auth.js';
import type { AppContext } from './context.js';

/**
 * The node a request acts for. A node token acts only for its own node (by name or id); an admin
 * acts for any node, and with `create` a name never seen before becomes a new node (seed behaviour).
 */
export async function resolveNode(
  ctx: AppContext,
  principal: Principal,
  ref: string | number,
  options: { create: boolean },
): Promise<{ id: number; name: string }> {
  if (principal.kind === 'node') {
    if (ref !== principal.nodeName && ref !== principal.nodeId && ref !== String(principal.nodeId)) {
      throw new AppError('FORBIDDEN', `This node token belongs to node "${principal.nodeName}", not "${ref}".`);
    }
    return { id: principal.nodeId, name: principal.nodeName };
  }
  if (!isAdmin(principal)) throw new AppError('FORBIDDEN', 'This route needs a node token or an admin token.');
  const node = typeof ref === 'number' ? await findNodeById(ctx.db, ref) : await findNodeByName(ctx.db, ref);
  if (node) return node;
  if (options.create && typeof ref === 'string') return findOrCreateNode(ctx.db, ref, actorOf(principal), ctx.clock.now());
  throw new AppError('NODE_NOT_FOUND', `No node "${ref}".`);
}
