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
  };
}
