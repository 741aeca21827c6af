import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Dialect } from '../db/dialect.js';
import { AppError, type ErrorCode } from '../errors.js';
import type { App } from './context.js';
import { describeValidationErrors } from './validation.js';

const fastifyCodes: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
};

const urlErrors: Record<string, { status: number; code: ErrorCode; detail: string }> = {
  FST_ERR_BAD_URL: { status: 400, code: 'BAD_REQUEST', detail: 'The URL is not valid: a path segment is not percent-encoded UTF-8.' },
  FST_ERR_MAX_PARAM_LENGTH: { status: 414, code: 'URL_TOO_LONG', detail: 'A path segment of the URL is too long.' },
};

/**
 * Fastify's `frameworkErrors`: errors found while routing, before the error handler can run, get
 * the same `{detail, code}` answer.
 */
export function answerFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const known = urlErrors[error.code];
  if (!known) request.log.error({ err: error }, 'routing failed');
  const { status, code, detail } = known ?? { status: 500, code: 'INTERNAL_ERROR', detail: 'Internal server error.' };
  void reply.status(status).send({ detail, code });
}

/**
 * The one place errors become responses: `{detail, code}`; validation errors are 422 with the
 * failing fields; a real message only below 500; never a stack trace.
 */
export function installErrorHandler(app: App, dialect: Dialect): void {
  app.setErrorHandler((error: FastifyError | AppError, request, reply) => {
    if (error instanceof AppError) {
      const { extra } = error;
      if (typeof extra.retry_after_seconds === 'number') reply.header('retry-after', String(extra.retry_after_seconds));
      if (error.code === 'RANGE_NOT_SATISFIABLE' && typeof extra.size === 'number') reply.header('content-range', `bytes */${extra.size}`);
      return reply.status(error.status).send({ ...extra, detail: error.detail, code: error.code });
    }
    if (error.validation) {
      const { detail, fields } = describeValidationErrors(error.validationContext ?? 'body', error.validation);
      return reply.status(422).send({ detail, code: 'VALIDATION_ERROR', fields });
    }
    const status = error.statusCode ?? 500;
    if (status === 429) {
      return reply.status(429).send({ detail: 'Too many requests; slow down and retry later.', code: 'RATE_LIMITED' });
    }
    if (status >= 400 && status < 500) {
      const code = fastifyCodes[error.code] ?? (error instanceof SyntaxError ? 'INVALID_JSON' : 'BAD_REQUEST');
      return reply.status(status).send({ detail: error.message, code });
    }
    if (dialect.isLockConflict(error)) {
      request.log.warn({ err: error }, 'database busy');
      return reply.status(503).header('retry-after', '1').send({ detail: 'The database is busy; retry in a moment.', code: 'DATABASE_BUSY' });
    }
    if (dialect.isConnectionError(error)) {
      request.log.warn({ err: error }, 'database unavailable');
      return reply.status(503).send({ detail: dialect.describeUnavailable(error), code: 'DATABASE_UNAVAILABLE' });
    }
    request.log.error({ err: error }, 'request failed');
    return reply.status(500).send({ detail: 'Internal server error.', code: 'INTERNAL_ERROR' });
  });

  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({ detail: `No route ${request.method} ${request.url.split('?')[0]}.`, code: 'ROUTE_NOT_FOUND' }),
  );
}
