/** Verdicts a score needs before it can take work away from a node. */
const SCORE_MIN_AUDITS = 5;

/** A node's audits within the score window. */
export interface AuditScore {
  passed: number;
  /** Failed and missed. */
  failed: number;
}

/** Whether a node's audits leave it below the minimum share passed (with enough of them to judge); never when `min` is 0. */
export function belowAuditScore(score: AuditScore, min: number): boolean {
  const total = score.passed + score.failed;
  return min > 0 && total >= SCORE_MIN_AUDITS && score.passed / total < min;
}

/** The share of audits passed, rounded to three places; null before any. */
export function auditScoreOf(node: { audits_passed: number; audits_failed: number }): number | null {
  const total = node.audits_passed + node.audits_failed;
  return total === 0 ? null : Math.round((node.audits_passed / total) * 1000) / 1000;
}
