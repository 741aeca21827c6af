import type { SafeFetch } from '../agent/safe-fetch.js';
import type { Config } from '../config.js';

export interface ProofDeps {
  /** Reads sources under the control plane's own address policy. */
  sourceFetch: SafeFetch;
  random: () => number;
  spotChecks: number;
  auditIntervalMs: number;
  auditsPerMinute: number;
  auditDeadlineMs: number;
  auditFailuresToLose: number;
  auditScoreMin: number;
  auditScoreWindowMs: number;
  /** A holder that lost its copy to an audit waits this long (doubling) before it is given the asset again. */
  cooldown: { cooldownMs: number; cooldownMaxMs: number };
  /** VETTING_AUDITS: passes a new node needs before its copies count; 0: no vetting. */
  vettingAudits: number;
}

export function proofDepsFrom(config: Config, sourceFetch: SafeFetch, random: () => number = Math.random): ProofDeps {
  return {
    sourceFetch,
    random,
    spotChecks: config.verifySpotChecks,
    auditIntervalMs: config.auditIntervalMs,
    auditsPerMinute: config.auditsPerMinute,
    auditDeadlineMs: config.auditDeadlineMs,
    auditFailuresToLose: config.auditFailuresToLose,
    auditScoreMin: config.auditScoreMin,
    auditScoreWindowMs: config.auditScoreWindowMs,
    cooldown: { cooldownMs: config.retryCooldownMs, cooldownMaxMs: config.retryCooldownMaxMs },
    vettingAudits: config.vettingAudits,
  };
}
