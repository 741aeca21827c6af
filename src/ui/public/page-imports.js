import { get } from './api.js';
import { badge, formatNumber, h, replaceIfChanged, table, timeOf } from './dom.js';

export const title = 'Imports';
export const adminOnly = true;

function progress(job) {
  if (job.datasets_total === null) return `${formatNumber(job.datasets_seen)} datasets`;
  const label = `${formatNumber(job.datasets_seen)} of ${formatNumber(job.datasets_total)} datasets`;
  return h('span', {}, h('progress', { max: Math.max(1, job.datasets_total), value: job.datasets_seen, 'aria-label': label }), ` ${label}`);
}

function render(jobs) {
  return table(
    'Catalog imports, newest first',
    ['#', 'Source', 'State', 'Progress', 'Resources', 'New / updated / unchanged', 'Removed', 'Rate', 'Started', 'Finished', 'Last error'],
    jobs.map((job) => [
      String(job.id),
      h('span', {}, `${job.source} `, h('small', {}, job.url)),
      badge(job.state),
      progress(job),
      formatNumber(job.resources_seen),
      `${formatNumber(job.assets_created)} / ${formatNumber(job.assets_updated)} / ${formatNumber(job.assets_unchanged)}`,
      formatNumber(job.removed_from_source),
      job.resources_per_second === null ? '—' : `${job.resources_per_second.toFixed(1)}/s`,
      timeOf(job.started_at, { seconds: false }),
      timeOf(job.finished_at, { seconds: false }),
      job.last_error ? h('span', { class: 'long-text' }, job.last_error) : '—',
    ]),
    'no import has run yet (POST /imports or the import command).',
  );
}

export function mount(root) {
  return {
    async refresh() {
      const jobs = (await get('/imports?limit=50')).items;
      replaceIfChanged(root, JSON.stringify(jobs), () => render(jobs));
    },
  };
}
