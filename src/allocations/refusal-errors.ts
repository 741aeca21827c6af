import { AppError } from '../errors.js';
import type { Refusal } from './allocation-rules.js';

/** The answer to a node refused new work, saying why and what to do. */
export function refusalError(refusal: Refusal, nodeName: string): AppError {
  switch (refusal) {
    case 'draining':
      return new AppError('NODE_DRAINING', `Node "${nodeName}" is being drained by an admin: it keeps its work but gets nothing new.`);
    case 'throttled':
      return new AppError('NODE_THROTTLED', `Node "${nodeName}" failed too many allocations and gets no work until an admin clears it.`);
    case 'audit_score_low':
      return new AppError('NODE_AUDIT_SCORE_LOW', `Node "${nodeName}" failed too many audits of its copies and gets no new work until its score recovers.`);
    case 'vetting_full':
      return new AppError(
        'NODE_VETTING',
        `Node "${nodeName}" is new: it holds at most VETTING_MAX_ASSETS allocations at once until it has passed VETTING_AUDITS audits; finish what it has.`,
      );
    case 'outside_window':
      return new AppError('OUTSIDE_NODE_WINDOW', `Node "${nodeName}" takes new work only inside its schedule windows (node-window), and none is open now.`);
    case 'stale_free_space':
      return new AppError('FREE_SPACE_REQUIRED', `Node "${nodeName}" has no recent free-space report; send free_space_gb.`);
  }
}
