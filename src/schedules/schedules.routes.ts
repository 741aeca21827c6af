import { Type } from '@sinclair/typebox';
import { toIso } from '../clock.js';
import type { Guards } from '../http/auth.js';
import type { App, AppContext } from '../http/context.js';
import { renterOf } from '../http/renter.js';
import { bearerSecurity, errorResponses, Nullable } from '../http/schemas.js';
import { userRateLimit } from '../http/user-rate-limit.js';
import { listScheduleRentals } from '../rentals/rentals.repository.js';
import { listSchedules } from './schedules.repository.js';
import { actionOf, createSchedule, deleteSchedule, findOwnSchedule, updateSchedule, type ScheduleInput } from './schedules.service.js';
import type { ScheduleRow } from './schedules.table.js';

const ScheduleIdParam = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2 ** 53 - 1 }) });
const Time = (description: string) => Type.String({ maxLength: 64, description });
const Cron = (description: string) => Nullable(Type.String({ maxLength: 200, description }));

// One object with optional fields rather than a union: each branch would refuse the other's fields
// as undeclared, and a refusal would list every branch's errors. The service checks which fields
// each kind needs.
const Action = Nullable(
  Type.Object(
    {
      kind: Type.Union([Type.Literal('reserve'), Type.Literal('node-window')], {
        description: 'reserve: rent workers for the owner in each window; node-window: a rescue node works only inside the windows (admin).',
      }),
      count: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'reserve: workers per window (at most RENT_MAX_COUNT).' })),
      ssh_password: Type.Optional(
        Type.String({ minLength: 1, maxLength: 128, description: "reserve: the rentals' password; default: generated and shown once in the answer." }),
      ),
      node: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$', description: "node-window: the rescue node's name." })),
    },
    { additionalProperties: false },
  ),
);

const fields = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  start_time: Time('ISO 8601; without an offset, UTC.'),
  end_time: Time('ISO 8601, after start_time; without an offset, UTC.'),
  status: Type.Optional(Type.String({ description: 'scheduled (default) or cancelled; running and completed are set by Dispatcher.' })),
  active: Type.Optional(Type.Boolean({ description: 'false suspends the schedule (a running window ends).' })),
  cron_start: Type.Optional(Cron('5-field cron: each occurrence opens a window (with cron_stop).')),
  cron_stop: Type.Optional(Cron('5-field cron: the next occurrence after an opening closes the window.')),
  timezone: Type.Optional(Nullable(Type.String({ maxLength: 64, description: 'IANA time zone of the cron expressions (default UTC).' }))),
};
const CreateBody = Type.Object({ ...fields, action: Type.Optional(Action) }, { additionalProperties: false });
const PatchBody = Type.Partial(Type.Object({ ...fields, action: Action }), { additionalProperties: false });

const WindowView = Type.Object({ start: Type.String(), end: Type.String() });
const ScheduleView = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  start_time: Type.String(),
  end_time: Type.String(),
  status: Type.String(),
  active: Type.Boolean(),
  owner_id: Type.Integer(),
  cron_start: Nullable(Type.String()),
  cron_stop: Nullable(Type.String()),
  timezone: Nullable(Type.String()),
  action: Nullable(Type.Object({}, { additionalProperties: true })),
  window: Nullable(WindowView),
  next_windows: Type.Array(WindowView, { description: 'The current window (if running) and the next ones, up to 5.' }),
  last_fired_at: Nullable(Type.String()),
  rentals: Type.Optional(
    Type.Array(
      Type.Object({ rental_id: Type.Integer(), node_id: Type.Integer(), client_user: Type.String(), state: Type.String(), leased_until: Type.String() }),
    ),
  ),
});

export function registerScheduleRoutes(app: App, ctx: AppContext, guards: Guards): void {
  // USER_RATE_LIMIT_PER_MINUTE, one budget per user across these routes and the rental routes.
  const rateLimitUser = userRateLimit(app, ctx.config.userRateLimitPerMinute);
  app.get(
    '/schedules',
    {
      onRequest: [guards.user, rateLimitUser],
      schema: {
        tags: ['schedules'],
        summary: "Schedules (users: their own; admins: all), in seed 004's shape plus recurrence, action and windows",
        security: bearerSecurity,
        response: { 200: Type.Array(ScheduleView), ...errorResponses },
      },
    },
    async (request) => {
      const owner = renterOf(request);
      const rows = await listSchedules(ctx.db, { ownerId: owner.admin ? undefined : owner.userId });
      return rows.map((row) => scheduleView(row));
    },
  );

  app.post(
    '/schedules',
    {
      onRequest: [guards.user, rateLimitUser],
      schema: {
        tags: ['schedules'],
        summary: 'Create a schedule: a time window, optionally recurring, optionally reserving workers or opening a node',
        security: bearerSecurity,
        body: CreateBody,
        response: {
          200: Type.Object({
            status: Type.String(),
            id: Type.Integer(),
            ssh_password: Type.Optional(Type.String({ description: 'Reserve without ssh_password: the generated password of its rentals, shown only here.' })),
            schedule: ScheduleView,
          }),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { row, password } = await createSchedule(ctx.db, ctx, renterOf(request), request.body as ScheduleInput, ctx.clock.now());
      return { status: 'created', id: row.id, ...(password ? { ssh_password: password } : {}), schedule: scheduleView(row) };
    },
  );

  app.get(
    '/schedules/:id',
    {
      onRequest: [guards.user, rateLimitUser],
      schema: {
        tags: ['schedules'],
        summary: 'One schedule, with its next windows and the rentals it made',
        security: bearerSecurity,
        params: ScheduleIdParam,
        response: { 200: ScheduleView, ...errorResponses },
      },
    },
    async (request) => {
      const row = await findOwnSchedule(ctx.db, renterOf(request), request.params.id);
      const rentals = await listScheduleRentals(ctx.db, row.id);
      return {
        ...scheduleView(row),
        rentals: rentals.map((rental) => ({
          rental_id: rental.id,
          node_id: rental.node_id,
          client_user: rental.account,
          state: rental.state,
          leased_until: toIso(rental.leased_until),
        })),
      };
    },
  );

  app.patch(
    '/schedules/:id',
    {
      onRequest: [guards.user, rateLimitUser],
      schema: {
        tags: ['schedules'],
        summary: "Change a schedule's name, times, recurrence, active flag or status (cancelled / scheduled)",
        security: bearerSecurity,
        params: ScheduleIdParam,
        body: PatchBody,
        response: { 200: ScheduleView, ...errorResponses },
      },
    },
    async (request) => scheduleView(await updateSchedule(ctx.db, ctx, renterOf(request), request.params.id, request.body as ScheduleInput, ctx.clock.now())),
  );

  app.delete(
    '/schedules/:id',
    {
      onRequest: [guards.user, rateLimitUser],
      schema: {
        tags: ['schedules'],
        summary: "Delete a schedule; a running window's effect ends first",
        security: bearerSecurity,
        params: ScheduleIdParam,
        response: { 200: Type.Object({ status: Type.String() }), ...errorResponses },
      },
    },
    async (request) => {
      await deleteSchedule(ctx.db, ctx, renterOf(request), request.params.id, ctx.clock.now());
      return { status: 'deleted' };
    },
  );
}

function scheduleView(row: ScheduleRow) {
  const window = row.window_start !== null && row.window_end !== null ? { start: toIso(row.window_start), end: toIso(row.window_end) } : null;
  const next = JSON.parse(row.next_windows) as { start: number; end: number }[];
  return {
    id: row.id,
    name: row.name,
    start_time: toIso(row.start_time),
    end_time: toIso(row.end_time),
    status: row.status,
    active: row.active === 1,
    owner_id: row.owner_id,
    cron_start: row.cron_start,
    cron_stop: row.cron_stop,
    timezone: row.timezone,
    action: actionOf(row),
    window,
    next_windows: next.map((entry) => ({ start: toIso(entry.start), end: toIso(entry.end) })),
    last_fired_at: toIso(row.last_fired_at),
  };
}
