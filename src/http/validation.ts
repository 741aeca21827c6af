import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchema, FastifySchemaCompiler } from 'fastify';

/** The `http-url` format: what `new URL` parses as http(s) with a host (a regex let `http://}l&]` through). */
export function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

function createAjv(coerceTypes: boolean): Ajv {
  // allErrors lists every failing field at once; the body limit bounds the work it can cause.
  // removeAdditional is off: a field the schema does not declare is refused by name, not dropped.
  const ajv = new Ajv({ coerceTypes, removeAdditional: false, useDefaults: true, allErrors: true, strict: false });
  addFormats.default(ajv);
  ajv.addFormat('http-url', { type: 'string', validate: isHttpUrl });
  return ajv;
}

const strict = createAjv(false);
const coercing = createAjv(true);

/**
 * JSON bodies are validated as sent ("10" is not a number); query strings and path parameters are
 * text by nature, so they are coerced to the declared types. Whatever the schema, every string of
 * a request must be one both databases store alike (findUnstorableStrings), or SQLite and
 * PostgreSQL would answer the same request differently.
 */
export const validatorCompiler: FastifySchemaCompiler<FastifySchema> = ({ schema, httpPart }) =>
  refusingUnstorableStrings((httpPart === 'body' ? strict : coercing).compile(schema as object));

function refusingUnstorableStrings(validate: ValidateFunction): ValidateFunction {
  const check = ((data: unknown, context?: Parameters<ValidateFunction>[1]) => {
    const errors = [...findUnstorableStrings(data), ...(validate(data, context) ? [] : (validate.errors ?? []))];
    check.errors = errors.length > 0 ? errors : null;
    return errors.length === 0;
  }) as ValidateFunction;
  // Fastify passes the parent object only to a function with a schemaEnv, and ajv needs it to
  // coerce or default a root value.
  return Object.assign(check, { schema: validate.schema, schemaEnv: validate.schemaEnv, errors: null });
}

const NUL = '\u0000';
const LONE_SURROGATE = /\p{Cs}/u;

/** A field name fit for a message: NUL and lone surrogates written as escapes. */
const printable = (name: string) => name.replaceAll(NUL, '\\u0000').replace(/\p{Cs}/gu, (surrogate) => `\\u${surrogate.charCodeAt(0).toString(16)}`);

/**
 * Every string and property name the databases cannot store alike, as ajv-style errors: NUL
 * (PostgreSQL refuses it) and lone surrogates (not Unicode: SQLite keeps their bytes, PostgreSQL
 * replaces them). Breadth-first, so no nesting depth overflows the stack.
 */
export function findUnstorableStrings(data: unknown): ErrorObject[] {
  const errors: ErrorObject[] = [];
  const pending: { value: unknown; path: string }[] = [{ value: data, path: '' }];
  for (let index = 0; index < pending.length; index += 1) {
    const { value, path } = pending[index] as { value: unknown; path: string };
    if (typeof value === 'string') {
      const problem = unstorable(value);
      if (problem) errors.push(stringError(path, problem));
    } else if (Array.isArray(value)) {
      value.forEach((entry, position) => pending.push({ value: entry, path: `${path}/${position}` }));
    } else if (value !== null && typeof value === 'object') {
      for (const [key, entry] of Object.entries(value)) {
        const child = `${path}/${printable(key).replaceAll('~', '~0').replaceAll('/', '~1')}`;
        const problem = unstorable(key);
        if (problem) errors.push(stringError(child, `${problem} in its name`));
        else pending.push({ value: entry, path: child });
      }
    }
  }
  return errors;
}

function unstorable(text: string): string | undefined {
  if (text.includes(NUL)) return 'must not contain a NUL character (\\u0000)';
  if (LONE_SURROGATE.test(text)) return 'must be well-formed Unicode (it holds a lone surrogate)';
  return undefined;
}

function stringError(instancePath: string, message: string): ErrorObject {
  return { instancePath, schemaPath: '#', keyword: 'storableString', params: {}, message };
}

/** Turns ajv errors into one readable sentence and a list of fields. */
export function describeValidationErrors(context: string, errors: Partial<ErrorObject>[]): { detail: string; fields: { field: string; message: string }[] } {
  const fields = errors.map((error) => {
    const base = `${context}${error.instancePath ?? ''}`;
    const params = (error.params ?? {}) as Record<string, unknown>;
    if (error.keyword === 'required') return { field: `${base}/${String(params.missingProperty)}`, message: 'is required' };
    if (error.keyword === 'additionalProperties') return { field: `${base}/${printable(String(params.additionalProperty))}`, message: 'is not allowed' };
    if (error.keyword === 'format' && params.format === 'http-url') return { field: base, message: 'must be an http(s) URL' };
    return { field: base, message: error.message ?? 'is invalid' };
  });
  const unique = fields.filter((field, index) => fields.findIndex((other) => other.field === field.field && other.message === field.message) === index);
  return { detail: unique.map((field) => `${field.field} ${field.message}`).join('; '), fields: unique };
}
