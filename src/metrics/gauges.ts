import { Gauge, type Registry } from 'prom-client';
import type { GroupCount } from './metrics.repository.js';

/**
 * Every value of a label listed, so one with no rows reads 0 instead of vanishing: an alert on
 * `dispatcher_assets{state="gone"} > 0` needs the series.
 */
export const listed = (values: readonly string[]): Record<string, true> => Object.fromEntries(values.map((value) => [value, true]));

/** A gauge without labels, read from the database at every scrape. */
export function queriedGauge(registers: Registry[], name: string, help: string, read: () => Promise<number>): void {
  new Gauge({
    name,
    help,
    registers,
    async collect() {
      this.set(await read());
    },
  });
}

/** A gauge with one label, refilled from a GROUP BY at every scrape; `known` keys read 0 when absent. */
export function countedGauge(
  registers: Registry[],
  name: string,
  help: string,
  label: string,
  known: Record<string, true>,
  count: () => Promise<GroupCount[]>,
): void {
  new Gauge({
    name,
    help,
    labelNames: [label],
    registers,
    async collect() {
      const rows = await count();
      this.reset();
      for (const key of Object.keys(known)) this.set({ [label]: key }, 0);
      for (const row of rows) this.set({ [label]: row.key }, row.count);
    },
  });
}

export interface LabelledValue<Label extends string> {
  labels: Record<Label, string>;
  value: number;
}

/** A gauge with several labels, refilled at every scrape from `read`, which lists every series (zeros included). */
export function labelledGauge<Label extends string>(
  registers: Registry[],
  name: string,
  help: string,
  labelNames: readonly Label[],
  read: () => Promise<LabelledValue<Label>[]>,
): void {
  new Gauge({
    name,
    help,
    labelNames,
    registers,
    async collect() {
      const values = await read();
      this.reset();
      for (const { labels, value } of values) this.set(labels, value);
    },
  });
}
