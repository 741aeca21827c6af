import { get, post } from './api.js';
import { timeline } from './charts.js';
import { announce, badge, formatTime, h, replaceIfChanged, table, timeOf } from './dom.js';

export const title = 'Rentals & schedules';
const LIVE = ['provisioning', 'active', 'migrating'];

function endButton(rental, refresh) {
  return h(
    'button',
    {
      type: 'button',
      id: `end-rental-${rental.rental_id}`,
      'aria-label': `End rental ${rental.rental_id}`,
      onclick: async (event) => {
        event.currentTarget.disabled = true;
        try {
          await post(`/api/release/${rental.rental_id}`);
          announce(`Rental ${rental.rental_id} ended.`);
        } catch (error) {
          announce(`Could not end rental ${rental.rental_id}: ${error.message}`);
        }
        await refresh();
      },
    },
    'End rental',
  );
}

function windowsOf(rentals, schedules) {
  const rows = [];
  for (const rental of rentals.filter((each) => LIVE.includes(each.state))) {
    rows.push({
      label: `rental ${rental.rental_id} · ${rental.hostname ?? rental.node_id}`,
      start: Date.parse(rental.leased_from),
      end: Date.parse(rental.leased_until),
      kind: 'rental',
    });
  }
  for (const schedule of schedules.filter((each) => each.active && each.status !== 'cancelled')) {
    for (const window of schedule.next_windows)
      rows.push({ label: schedule.name, start: Date.parse(window.start), end: Date.parse(window.end), kind: 'schedule' });
  }
  return rows.slice(0, 40);
}

function render(rentals, schedules, refresh) {
  const rows = windowsOf(rentals, schedules);
  return [
    rows.length ? timeline('Rentals and upcoming schedule windows', rows, Date.now()) : h('p', { class: 'empty' }, 'No live rental and no upcoming window.'),
    table(
      'Rentals, newest first',
      ['#', 'Worker', 'User', 'State', 'From', 'Until', 'Ended', ''],
      rentals.map((rental) => [
        String(rental.rental_id),
        `${rental.hostname ?? rental.node_id}${rental.ssh_port ? ` :${rental.ssh_port}` : ''}`,
        `${rental.client_user} (user ${rental.user_id})`,
        badge(rental.state),
        timeOf(rental.leased_from, { seconds: false }),
        timeOf(rental.leased_until, { seconds: false }),
        rental.ended_at ? `${formatTime(rental.ended_at)} (${rental.end_reason ?? ''})` : '—',
        // The API lists a user's own rentals only (an admin's: all), so whoever sees a live one may end it.
        LIVE.includes(rental.state) ? endButton(rental, refresh) : '',
      ]),
      'none.',
    ),
    table(
      'Schedules',
      ['#', 'Name', 'Status', 'Active', 'Window', 'Recurrence', 'Action'],
      schedules.map((schedule) => [
        String(schedule.id),
        schedule.name,
        badge(schedule.status),
        schedule.active ? 'yes' : 'no',
        `${formatTime(schedule.start_time)} – ${formatTime(schedule.end_time)}`,
        schedule.cron_start ? `${schedule.cron_start} → ${schedule.cron_stop} (${schedule.timezone ?? 'UTC'})` : '—',
        schedule.action ? JSON.stringify(schedule.action) : '—',
      ]),
      'none.',
    ),
  ];
}

export function mount(root) {
  const refresh = async () => {
    const [rentals, schedules] = await Promise.all([get('/api/rentals'), get('/schedules')]);
    replaceIfChanged(root, JSON.stringify([rentals, schedules]), () => render(rentals, schedules, refresh));
  };
  return { refresh };
}
