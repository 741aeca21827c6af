import { createLiveBlock, formatEta as eta } from '../terminal.js';
import { COPIES_NAME } from './download-origin.js';
import type { Job } from './job.js';
import { printable } from '../lib/printable.js';

export interface Progress {
  log(message: string): void;
  started(job: Job): void;
  finished(job: Job, outcome: string): void;
  /** Starts periodic output; returns a function that stops it. */
  watch(jobs: () => Job[]): () => void;
}

const MIB = 1024 * 1024;

function human(bytes: number): string {
  if (bytes >= 1024 * MIB) return `${(bytes / 1024 / MIB).toFixed(2)} GiB`;
  if (bytes >= MIB / 10) return `${(bytes / MIB).toFixed(1)} MiB`;
  return bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${bytes} B`;
}

/**
 * On a terminal: a live block with one line per download and a total (bytes, rate, ETA), redrawn
 * every second. Elsewhere (a log file, systemd): plain timestamped lines, with a summary line
 * every `summaryEvery` milliseconds while downloads run.
 */
export function createProgress(output: NodeJS.WriteStream, summaryEvery = 30_000): Progress {
  const tty = output.isTTY === true;
  const block = createLiveBlock(output);
  const rates = new Map<string, { bytes: number; at: number; rate: number }>();
  // Asset ids, names, URLs and servers' answers come from outside: nothing they hold may drive the terminal.
  const line = (text: string) => block.print(`${new Date().toISOString()} ${printable(text)}`);
  const measure = (job: Job) => {
    const now = Date.now();
    const last = rates.get(job.task.id);
    if (!last) {
      rates.set(job.task.id, { bytes: job.bytesDone, at: now, rate: 0 });
      return 0;
    }
    const elapsed = (now - last.at) / 1000;
    const rate = elapsed > 0.5 ? (job.bytesDone - last.bytes) / elapsed : last.rate;
    if (elapsed > 0.5) rates.set(job.task.id, { bytes: job.bytesDone, at: now, rate });
    return rate;
  };
  const describe = (job: Job) => {
    const rate = measure(job);
    const total = job.task.sizeBytes;
    const share = total ? `${((job.bytesDone / total) * 100).toFixed(1).padStart(5)}%` : '   ? %';
    const left = total ? eta((total - job.bytesDone) / rate) : '—';
    return `${share} ${human(job.bytesDone)}${total ? ` / ${human(total)}` : ''} ${human(rate)}/s ETA ${left}  ${printable(job.task.id)}`;
  };
  const summary = (jobs: Job[]) => {
    const rate = jobs.reduce((sum, job) => sum + (rates.get(job.task.id)?.rate ?? 0), 0);
    const done = jobs.reduce((sum, job) => sum + job.bytesDone, 0);
    const left = jobs.reduce((sum, job) => sum + Math.max(0, (job.task.sizeBytes ?? job.bytesDone) - job.bytesDone), 0);
    return `total: ${jobs.length} download(s), ${human(done)} done, ${human(rate)}/s, ETA ${eta(left / rate)}`;
  };
  return {
    log(message) {
      line(message);
    },
    started(job) {
      rates.set(job.task.id, { bytes: job.bytesDone, at: Date.now(), rate: 0 });
      const from = job.task.restoreUrl === null ? job.task.url : COPIES_NAME;
      line(`downloading ${job.task.id} (${job.task.sizeBytes === null ? 'size unknown' : human(job.task.sizeBytes)}) from ${from}`);
    },
    finished(job, outcome) {
      rates.delete(job.task.id);
      line(`${job.task.id}: ${outcome}`);
    },
    watch(jobs) {
      const timer = setInterval(
        () => {
          const current = jobs();
          if (current.length === 0) return;
          if (!tty) return line(summary(current.map((job) => (measure(job), job))));
          block.draw([...current.map(describe), summary(current)]);
        },
        tty ? 1000 : summaryEvery,
      );
      timer.unref();
      return () => {
        clearInterval(timer);
        block.clear();
      };
    },
  };
}
