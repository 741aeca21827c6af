import type { Db } from '../db/database.js';
import { AppError } from '../errors.js';
import { verifyBlock } from '../lib/merkle.js';
import type { AuditAnswer } from './audits.schemas.js';
import { findAudit, findAuditedCopy, type AuditedCopy } from './audits.repository.js';
import type { AuditRow } from './audits.table.js';
import type { ProofDeps } from './proof-deps.js';
import { applyVerdict, type Judgement } from './verdicts.service.js';

/**
 * A holder's answer to one of its open audits, judged and applied. Another node's audit is not
 * found (its existence is not told); an ended one is 409; one past its deadline is recorded as
 * missed and is 409 too.
 */
export async function answerAudit(db: Db, deps: ProofDeps, nodeId: number, auditId: number, answer: AuditAnswer, now: number): Promise<Judgement> {
  const audit = await findAudit(db, auditId);
  if (!audit || Number(audit.node_id) !== nodeId) throw new AppError('AUDIT_NOT_FOUND', `Node ${nodeId} has no audit ${auditId}.`);
  if (audit.state !== 'open') throw new AppError('AUDIT_ENDED', `Audit ${auditId} is ${audit.state}; it takes no answer.`);
  if (Number(audit.lease_until) < now) {
    await applyVerdict(db, deps, audit, { verdict: 'missed', detail: 'answered after its deadline' }, now);
    throw new AppError('AUDIT_ENDED', `Audit ${auditId} was due by ${new Date(Number(audit.lease_until)).toISOString()}; it was missed.`);
  }
  const copy = await findAuditedCopy(db, Number(audit.allocation_id));
  const judgement = judge(audit, copy, answer);
  if (!(await applyVerdict(db, deps, audit, judgement, now))) throw new AppError('AUDIT_ENDED', `Audit ${auditId} has ended; it takes no answer.`);
  return judgement;
}

/** Whether the answer shows the audited bytes: the nonced hashes expected, or a block on the agreed root's tree. */
export function judge(audit: AuditRow, copy: AuditedCopy | undefined, answer: AuditAnswer): Judgement {
  if (answer.missing) return { verdict: 'failed', detail: 'its holder reports the copy missing', gone: true };
  if (audit.method === 'ranges') {
    const expected = JSON.parse(audit.expected ?? '[]') as string[];
    const hashes = (answer.hashes ?? []).map((hash) => hash.toLowerCase());
    if (hashes.length !== expected.length) return { verdict: 'failed', detail: `${hashes.length} hashes answered, ${expected.length} asked for` };
    const wrong = expected.findIndex((hash, index) => hash !== hashes[index]);
    return wrong === -1
      ? { verdict: 'passed', detail: `${expected.length} nonced ranges match the source` }
      : { verdict: 'failed', detail: `range ${wrong + 1} does not match the source` };
  }
  const root = copy?.agreedRoot;
  if (!copy || !root) return { verdict: 'failed', detail: 'the copy has no agreed Merkle root to check against' };
  if (answer.block === undefined || answer.proof === undefined) return { verdict: 'failed', detail: 'a block audit is answered with block and proof' };
  const block = Buffer.from(answer.block, 'base64');
  const valid = verifyBlock({ root, size: copy.bytes, index: Number(audit.block), block, proof: answer.proof.map((hash) => hash.toLowerCase()) });
  return valid
    ? { verdict: 'passed', detail: `block ${audit.block} is on the agreed Merkle tree` }
    : { verdict: 'failed', detail: `block ${audit.block} or its path does not match the agreed Merkle root` };
}
