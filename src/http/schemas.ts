import { Type, type TSchema } from '@sinclair/typebox';

export const ErrorResponse = Type.Object(
  {
    detail: Type.String({ description: 'What went wrong, for a human.' }),
    code: Type.String({ description: 'Machine-readable error code (see the README).' }),
  },
  { additionalProperties: true, $id: 'ErrorResponse' },
);

/** Declared on every route so the OpenAPI document shows the error shape. */
export const errorResponses = {
  '4xx': Type.Ref(ErrorResponse),
  '5xx': Type.Ref(ErrorResponse),
};

export const bearerSecurity = [{ bearerAuth: [] }];

export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const Limit = (fallback: number, maximum: number) =>
  Type.Integer({ minimum: 1, maximum, default: fallback, description: `Page size (default ${fallback}, at most ${maximum}).` });

export const IsoTime = Type.String({ format: 'date-time' });

/**
 * A positive span in hours. "Positive" is written as at least 0.001 h (3.6 s): OpenAPI 3.0 has no
 * numeric exclusiveMinimum, and no lease or token is meant to be shorter.
 */
export const Hours = (maximum: number, description: string) => Type.Number({ minimum: 0.001, maximum, description: `Hours, 0.001–${maximum}. ${description}` });

export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;

/** The seeds' megabytes are binary (MiB); three decimals keep byte-exact round trips for whole MiB. */
export const bytesToMb = (bytes: number | null): number | null => (bytes === null ? null : Math.round((bytes / MIB) * 1000) / 1000);

/** Per-route rate limit keyed by client address: for anonymous routes (login, sign-up, registration). */
export const perAddressRateLimit = (max: number) => ({ rateLimit: { max, timeWindow: 60_000, keyGenerator: (request: { ip: string }) => request.ip } });

/** The `{id}` of a node route: its id or its name. */
export const NodeRefParam = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$', description: 'Node id or name.' }) });
