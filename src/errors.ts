/**
 * The whole catalogue of error codes with their HTTP status. Services throw `AppError`;
 * the one error handler (`http/error-handler.ts`) turns it into `{detail, code}`.
 */
export const errorCodes = {
  VALIDATION_ERROR: 422,
  INVALID_JSON: 400,
  BAD_REQUEST: 400,
  BODY_TOO_LARGE: 413,
  URL_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNAUTHENTICATED: 401,
  TOKEN_EXPIRED: 401,
  INVALID_CREDENTIALS: 401,
  FORBIDDEN: 403,
  SIGNUP_CLOSED: 403,
  NODE_THROTTLED: 403,
  WORKER_ADDRESS_NOT_OWN: 403,
  NOT_FOUND: 404,
  ROUTE_NOT_FOUND: 404,
  ASSET_NOT_FOUND: 404,
  NODE_NOT_FOUND: 404,
  NO_ASSETS_AVAILABLE: 404,
  NOT_ALLOCATED: 404,
  IMPORT_NOT_FOUND: 404,
  RENTAL_NOT_FOUND: 404,
  SCHEDULE_NOT_FOUND: 404,
  USER_NOT_FOUND: 404,
  ENROLLMENT_TOKEN_NOT_FOUND: 404,
  USERNAME_TAKEN: 409,
  NODE_NAME_TAKEN: 409,
  ALREADY_COMPLETED: 409,
  CHECKSUM_MISMATCH: 409,
  SIZE_MISMATCH: 409,
  NODE_DRAINING: 409,
  FREE_SPACE_REQUIRED: 409,
  IMPORT_ALREADY_RUNNING: 409,
  IMPORT_STATE_CONFLICT: 409,
  RENTAL_ENDED: 409,
  EXTENSION_TOO_LONG: 409,
  HOST_KEY_CHANGED: 409,
  HOST_KEY_TAKEN: 409,
  WORKER_ADDRESS_TAKEN: 409,
  RESERVATION_CONFLICT: 409,
  OUTSIDE_NODE_WINDOW: 409,
  QUOTA_EXCEEDED: 409,
  WEAK_PASSWORD: 422,
  CONFIRMATION_REQUIRED: 422,
  RATE_LIMITED: 429,
  INTERNAL_ERROR: 500,
  DATABASE_UNAVAILABLE: 503,
  DATABASE_BUSY: 503,
  NOT_ENOUGH_WORKERS: 503,
  PROVISIONING_FAILED: 503,
} as const;

export type ErrorCode = keyof typeof errorCodes;

export class AppError extends Error {
  readonly status: number;

  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(detail);
    this.status = errorCodes[code];
  }
}
