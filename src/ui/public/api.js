// The public HTTP API with the user's token, kept for this tab only (sessionStorage).
const TOKEN_KEY = 'dispatcher.token';

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

let onSignedOut = () => {};

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  onSignedOut();
}

/** The claims of the token, for showing or hiding admin actions; the API decides what is allowed. */
export function claims() {
  const value = token();
  if (!value) return null;
  try {
    const payload = value.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const parsed = JSON.parse(atob(payload));
    return { username: String(parsed.username), admin: parsed.role === 'admin' };
  } catch {
    return null;
  }
}

export async function request(method, path, body) {
  const headers = { accept: 'application/json' };
  const value = token();
  if (value) headers.authorization = `Bearer ${value}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (response.status === 401 && value) signOut();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => request('GET', path);

/**
 * The bytes at `path` with the user's token, as a Blob; a redirect (the restore's source) is not
 * followed but returned as `{ redirected: true }`, for the caller to open the source itself.
 */
export async function download(path) {
  const headers = {};
  const value = token();
  if (value) headers.authorization = `Bearer ${value}`;
  const response = await fetch(path, { headers, redirect: 'manual' });
  if (response.type === 'opaqueredirect') return { redirected: true };
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return { blob: await response.blob() };
}
export const post = (path, body = {}) => request('POST', path, body);

export async function logIn(username, password) {
  const { token: value } = await request('POST', '/auth/login', { username, password });
  sessionStorage.setItem(TOKEN_KEY, value);
  return claims();
}

/** A query string from the set values of an object. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  const text = search.toString();
  return text ? `?${text}` : '';
}
