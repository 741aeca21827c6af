import type { Generated, Selectable } from 'kysely';

/** `offline`: its agent said goodbye (a clean stop); liveness timeouts do not apply to it. */
export const NODE_STATUSES = ['unknown', 'alive', 'suspect', 'dead', 'draining', 'offline'] as const;
export type NodeStatus = (typeof NODE_STATUSES)[number];

/** A worker's SSH probe: unknown until its first answer (or while its host key is not proven), alive, or dead after WORKER_PROBE_FAILURES failures. */
export const PROBE_STATUSES = ['unknown', 'alive', 'dead'] as const;
export type ProbeStatus = (typeof PROBE_STATUSES)[number];

export interface NodesTable {
  id: Generated<number>;
  name: string;
  hostname: string;
  ip: string | null;
  ssh_port: number | null;
  status: NodeStatus;
  free_bytes: number | null;
  free_reported_at: number | null;
  last_heartbeat_at: number | null;
  probe_failures: number;
  bandwidth_bps: number | null;
  /** JSON object of string tags, e.g. {"region":"eu"}. */
  tags: string;
  token_hash: string | null;
  created_at: number;
  /** Failed, expired or mismatched allocations not yet made up for; each halves what the node is given. */
  strikes: Generated<number>;
  /** 1 while an admin drains the node: it keeps its work but gets nothing new. */
  draining: Generated<number>;
  bytes_in_flight: number | null;
  /** The worker's SSH host key ("ssh-ed25519 AAAA…"), pinned on first registration. */
  ssh_host_key: string | null;
  /** The account on the worker that Dispatcher's provisioning key may run worker commands as. */
  ssh_user: string | null;
  /** When the control plane's own SSH key exchange with ip:ssh_port last presented the pinned host key (migration 0013). */
  host_key_verified_at: number | null;
  /** When the node became rentable by approval (WORKER_APPROVAL=admin), or its creation otherwise. */
  approved_at: number | null;
  probe_status: Generated<ProbeStatus>;
  probed_at: number | null;
  quarantined_at: number | null;
  quarantine_reason: string | null;
  /** Node windows (schedules): the current or next window; both null when the node has none. */
  window_from: number | null;
  window_until: number | null;
  /** Bytes held by the node's active allocations, kept by triggers on allocations (migration 0008). */
  reserved_bytes: Generated<number>;
  /** Audits this node passed and failed (or missed) within AUDIT_SCORE_WINDOW_DAYS, counted as verdicts arrive and recounted at least hourly (audit_score_at). */
  audits_passed: Generated<number>;
  audits_failed: Generated<number>;
  /** When the audit counts were last recounted from the node's verdicts within the window (null: never; migration 0018). */
  audit_score_at: number | null;
  /** The user behind the node (migration 0017); null: registered before operators, it counts as its own. */
  operator_id: number | null;
  /** When it passed VETTING_AUDITS audits (migration 0017); null while it is new. */
  vetted_at: number | null;
}

export interface EnrollmentTokensTable {
  id: Generated<number>;
  token_hash: string;
  note: string | null;
  created_by: number | null;
  created_at: number;
  expires_at: number | null;
  /** Nodes registered with it. */
  uses: number;
  /** Null: unlimited (migration 0012). */
  max_uses: number | null;
  revoked_at: number | null;
  /** A personal token: the user the nodes it registers belong to; null: they belong to `created_by`. */
  operator_id: number | null;
}

export type EnrollmentTokenRow = Selectable<EnrollmentTokensTable>;

export type NodeRow = Selectable<NodesTable>;
