import { AppError } from '../errors.js';
import { isValidAssetId } from './assets.schemas.js';

// A page of GET /assets ends at an id; the cursor wraps it so that a made-up cursor is told apart
// from a real one (any text is a valid id, and an unknown one silently gave an empty page).
const PREFIX = 'asset:';

export function encodeAssetCursor(id: string): string {
  return Buffer.from(PREFIX + id).toString('base64url');
}

/** The id a next_cursor of GET /assets stands for; anything else is a 422. */
export function decodeAssetCursor(cursor: string): string {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const id = text.slice(PREFIX.length);
  if (!text.startsWith(PREFIX) || encodeAssetCursor(id) !== cursor || !isValidAssetId(id)) {
    throw new AppError('VALIDATION_ERROR', `querystring/cursor "${cursor.slice(0, 100)}" is not a next_cursor of GET /assets; start without one.`);
  }
  return id;
}
