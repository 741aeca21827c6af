import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { request } from 'undici';
import { machineCpuSeconds, postgresCpuSeconds, processCpuSeconds, readMemoryMb } from './procfs.js';

const MIB = 1024 * 1024;
/** How often the control plane's (and the agent's) VmRSS is read during a round. */
const RSS_SAMPLE_MS = 100;

export type RestorePath = 'direct' | 'relayed';

/** CPU over one round as a share of one core (100 = one core busy). */
export interface RoundCpu {
  serverPercent: number;
  agentPercent: number;
  fileServerPercent: number;
  /** The bench process: the client reading and hashing the body. */
  clientPercent: number;
  postgresPercent: number;
  machinePercent: number;
}

/** One download of the whole file by the bench client, straight from the file server or relayed by the control plane. */
export interface RestoreRound {
  path: RestorePath;
  round: number;
  status: number;
  bytes: number;
  /** From just before the request to the last byte read and hashed. */
  seconds: number;
  /** From just before the request to the first byte of the body. */
  firstByteMs: number;
  /** MiB per second over `seconds`: the figure the headline compares. */
  mibPerSecond: number;
  /** MiB per second from the first byte on: what the stream carries once it flows. */
  streamMibPerSecond: number;
  sha256Ok: boolean;
  error?: string;
  /** Highest VmRSS read every 100 ms during the round (MiB). */
  serverRssMb: number;
  agentRssMb: number;
  rssSamples: number;
  cpu: RoundCpu;
}

export interface Target {
  url: string;
  headers: Record<string, string>;
}

export interface Expected {
  bytes: number;
  sha256: string;
  postgresDatabase?: string;
}

/** The processes whose CPU and memory a round reads. */
export interface RoundPids {
  server: number;
  agent: number;
  fileServer: number;
}

/** One download with its RSS samples and CPU; a failed download is a round with its error, not an exception. */
export async function runRound(which: RestorePath, round: number, target: Target, pids: RoundPids, expected: Expected): Promise<RestoreRound> {
  const stopRss = startRssSampler([pids.server, pids.agent]);
  const stopCpu = startRoundCpu(pids, expected.postgresDatabase);
  const download = await downloadAndHash(target.url, target.headers);
  const cpu = stopCpu();
  const { peaks, samples } = stopRss();
  const complete = download.error === undefined && download.status === 200 && download.bytes === expected.bytes;
  const sha256Ok = complete && download.sha256 === expected.sha256;
  const streamSeconds = download.seconds - download.firstByteMs / 1000;
  const error = download.error ?? (!complete ? `status ${download.status}, ${download.bytes} bytes` : !sha256Ok ? `sha256 ${download.sha256}` : undefined);
  return {
    path: which,
    round,
    status: download.status,
    bytes: download.bytes,
    seconds: download.seconds,
    firstByteMs: download.firstByteMs,
    // A failed or wrong download carried nothing usable: it counts as 0 in the medians.
    mibPerSecond: sha256Ok ? download.bytes / MIB / download.seconds : 0,
    streamMibPerSecond: sha256Ok && streamSeconds > 0 ? download.bytes / MIB / streamSeconds : 0,
    sha256Ok,
    ...(error === undefined ? {} : { error }),
    serverRssMb: peaks[0] ?? 0,
    agentRssMb: peaks[1] ?? 0,
    rssSamples: samples,
    cpu,
  };
}

interface Download {
  status: number;
  bytes: number;
  sha256: string;
  seconds: number;
  firstByteMs: number;
  error?: string;
}

/** The same client work on both paths: read the whole body and hash it. */
async function downloadAndHash(url: string, headers: Record<string, string>): Promise<Download> {
  const started = performance.now();
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  let firstByte: number | undefined;
  let status = 0;
  try {
    const response = await request(url, { headers });
    status = response.statusCode;
    for await (const piece of response.body) {
      firstByte ??= performance.now();
      hash.update(piece as Buffer);
      bytes += (piece as Buffer).length;
    }
  } catch (error) {
    return {
      status,
      bytes,
      sha256: '',
      seconds: (performance.now() - started) / 1000,
      firstByteMs: (firstByte ?? started) - started,
      error: (error as Error).message,
    };
  }
  const finished = performance.now();
  return { status, bytes, sha256: hash.digest('hex'), seconds: (finished - started) / 1000, firstByteMs: (firstByte ?? finished) - started };
}

/** Reads VmRSS of each pid now and every 100 ms; the stop function returns the highest of each and the number of readings. */
function startRssSampler(pids: number[]): () => { peaks: number[]; samples: number } {
  const peaks = pids.map(() => 0);
  let samples = 0;
  const sample = () => {
    samples += 1;
    pids.forEach((pid, index) => {
      peaks[index] = Math.max(peaks[index] ?? 0, readMemoryMb(pid, 'VmRSS') ?? 0);
    });
  };
  sample();
  const timer = setInterval(sample, RSS_SAMPLE_MS);
  return () => {
    clearInterval(timer);
    sample();
    return { peaks, samples };
  };
}

/** Each process's CPU over the round, read from /proc at its start and end. */
function startRoundCpu(pids: RoundPids, postgresDatabase: string | undefined): () => RoundCpu {
  const postgresNow = () => (postgresDatabase ? postgresCpuSeconds(postgresDatabase) : 0);
  const started = performance.now();
  const before = { server: processCpuSeconds(pids.server), agent: processCpuSeconds(pids.agent), fileServer: processCpuSeconds(pids.fileServer) };
  const self = process.cpuUsage();
  const postgres = postgresNow();
  const machine = machineCpuSeconds().busy;
  return () => {
    const elapsed = (performance.now() - started) / 1000;
    const percent = (cpuSeconds: number) => Math.round((cpuSeconds / elapsed) * 1000) / 10;
    const used = process.cpuUsage(self);
    return {
      serverPercent: percent(processCpuSeconds(pids.server) - before.server),
      agentPercent: percent(processCpuSeconds(pids.agent) - before.agent),
      fileServerPercent: percent(processCpuSeconds(pids.fileServer) - before.fileServer),
      clientPercent: percent((used.user + used.system) / 1e6),
      // Backends that ended during the round take their CPU with them: the sum may shrink, never below nothing.
      postgresPercent: Math.max(0, percent(postgresNow() - postgres)),
      machinePercent: percent(machineCpuSeconds().busy - machine),
    };
  };
}

/** One line per round, printed as the bench goes. */
export function roundLine(round: RestoreRound): string {
  const { cpu } = round;
  const outcome = round.sha256Ok ? 'sha256 ok' : `FAILED (${round.error})`;
  return (
    `  ${round.path} ${round.round}: ${round.mibPerSecond.toFixed(0)} MiB/s (${round.seconds.toFixed(2)} s, first byte ${round.firstByteMs.toFixed(0)} ms, ` +
    `${round.streamMibPerSecond.toFixed(0)} MiB/s after it), ${outcome}; RSS server ${Math.round(round.serverRssMb)} / agent ${Math.round(round.agentRssMb)} MB; ` +
    `CPU server ${cpu.serverPercent}% / agent ${cpu.agentPercent}% / file server ${cpu.fileServerPercent}% / client ${cpu.clientPercent}%`
  );
}
