import { createSafeFetch } from '../agent/safe-fetch.js';
import { principalOf, type Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { bearerSecurity, errorResponses } from '../http/schemas.js';
import { answerAudit } from './audit-answers.service.js';
import { AuditAnswer, AuditIdParam, AuditResult } from './audits.schemas.js';
import { proofDepsFrom, type ProofDeps } from './proof-deps.js';

/** The control plane's own reads of sources, for spot checks and audits. */
export function proofDepsOf(ctx: AppContext): ProofDeps {
  return proofDepsFrom(ctx.config, createSafeFetch({ allowPrivate: ctx.config.sourceAllowPrivate, userAgent: 'dispatcher (copy audits)' }));
}

export function registerAuditRoutes(app: App, ctx: AppContext, guards: Guards): void {
  const deps = proofDepsOf(ctx);
  app.post(
    '/api/audits/:id',
    {
      onRequest: guards.node,
      config: { rateLimit: { max: ctx.config.nodeRateLimitPerMinute, timeWindow: 60_000 } },
      schema: {
        tags: ['transfers'],
        summary: "A holder's answer to an audit of its copy (the holder only): nonced hashes of ranges, or a block with its Merkle path",
        description:
          'Audits reach a node in its heartbeat answer and its transfers long-poll. A wrong answer is a verdict (200, failed), not an error; 409 AUDIT_ENDED means the audit takes no answer any more.',
        security: bearerSecurity,
        params: AuditIdParam,
        body: AuditAnswer,
        response: { 200: AuditResult, ...errorResponses },
      },
    },
    async (request) => {
      const principal = principalOf(request);
      const nodeId = principal.kind === 'node' ? principal.nodeId : -1;
      const judgement = await answerAudit(ctx.db, deps, nodeId, request.params.id, request.body, ctx.clock.now());
      return { verdict: judgement.verdict === 'passed' ? ('passed' as const) : ('failed' as const), detail: judgement.detail };
    },
  );
}
