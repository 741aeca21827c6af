import { Type } from '@sinclair/typebox';
import { RECENT_AUDITS_MS, type ProofFigures } from './proof-figures.service.js';

const Counts = (description: string) => Type.Record(Type.String(), Type.Integer(), { description });

/** What `/status` and `/api/summary` both say of proofs: claimed against proven bytes, copies by proof, the day's verdicts. */
export const ProofFields = {
  bytes_proven: Type.Integer({
    description: 'Bytes of every counted copy (proven, or suspect and still counted): bytes_rescued, read with bytes_claimed so never above it.',
  }),
  bytes_claimed: Type.Integer({
    description: 'Bytes of every completed copy, proven or not: what holders report they keep. Minus bytes_proven: claimed but not (or no longer) counted.',
  }),
  copies_by_proof: Counts(
    'Completed copies by proof state: pending (spot check under way), unproven (no spot check possible), proven, suspect (failed or missed its last audit); 0 included.',
  ),
  audits_last_day: Type.Object(
    { passed: Type.Integer(), failed: Type.Integer(), missed: Type.Integer() },
    { description: `Spot checks and retention audits that ended in the last ${RECENT_AUDITS_MS / 3_600_000} h (the server's clock), by verdict.` },
  ),
};

/** The values of `ProofFields`. */
export function toProofFields(proofs: ProofFigures) {
  return {
    bytes_proven: proofs.bytesProven,
    bytes_claimed: proofs.bytesClaimed,
    copies_by_proof: proofs.copiesByProof,
    audits_last_day: proofs.auditsLastDay,
  };
}
