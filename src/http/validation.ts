import { Ajv, type ErrorObject } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchema, FastifySchemaCompiler } from 'fastify';

function createAjv(coerceTypes: boolean): Ajv {
  // allErrors lists every failing field at once; the body limit bounds the work it can cause.
  const ajv = new Ajv({ coerceTypes, removeAdditional: true, useDefaults: true, allErrors: true, strict: false });
  addFormats.default(ajv);
  return ajv;
}

const strict = createAjv(false);
const coercing = createAjv(true);

/**
 * JSON bodies are validated as sent ("10" is not a number); query strings and path parameters are
 * text by nature, so they are coerced to the declared types.
 */
export const validatorCompiler: FastifySchemaCompiler<FastifySchema> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? strict : coercing).compile(schema as object);

/** Turns ajv errors into one readable sentence and a list of fields. */
export function describeValidationErrors(context: string, errors: Partial<ErrorObject>[]): { detail: string; fields: { field: string; message: string }[] } {
  const fields = errors.map((error) => {
    const base = `${context}${error.instancePath ?? ''}`;
    const params = (error.params ?? {}) as Record<string, unknown>;
    if (error.keyword === 'required') return { field: `${base}/${String(params.missingProperty)}`, message: 'is required' };
    if (error.keyword === 'additionalProperties') return { field: `${base}/${String(params.additionalProperty)}`, message: 'is not allowed' };
    return { field: base, message: error.message ?? 'is invalid' };
  });
  const unique = fields.filter((field, index) => fields.findIndex((other) => other.field === field.field && other.message === field.message) === index);
  return { detail: unique.map((field) => `${field.field} ${field.message}`).join('; '), fields: unique };
}
