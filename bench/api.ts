import { request } from 'undici';

/** A node registered through the real API, with the token it allocates with. */
export interface BenchNode {
  id: number;
  name: string;
  token: string;
}

export async function postJson<T>(url: string, body: unknown, bearer?: string): Promise<T> {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`POST ${new URL(url).pathname} answered ${response.statusCode}: ${text}`);
  return JSON.parse(text) as T;
}

export async function getJson<T>(url: string, bearer: string): Promise<T> {
  const response = await request(url, { headers: { authorization: `Bearer ${bearer}` } });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`GET ${new URL(url).pathname} answered ${response.statusCode}: ${text}`);
  return JSON.parse(text) as T;
}

/** A user token (a JWT) from POST /auth/login. */
export async function logIn(baseUrl: string, username: string, password: string): Promise<string> {
  return (await postJson<{ token: string }>(`${baseUrl}/auth/login`, { username, password })).token;
}

/** Signs a new user up (SIGNUP=open, the default) and logs it in. */
export async function signUpAndLogIn(baseUrl: string, username: string, password: string): Promise<string> {
  await postJson(`${baseUrl}/auth/signup`, { username, password });
  return logIn(baseUrl, username, password);
}

/** A token nodes register with, made by the admin. */
export async function createEnrollmentToken(baseUrl: string, adminToken: string): Promise<string> {
  return (await postJson<{ token: string }>(`${baseUrl}/api/enrollment-tokens`, { note: 'bench' }, adminToken)).token;
}

/** Logs in as admin, creates an enrollment token, and registers `count` nodes with it (as real nodes do). */
export async function registerNodes(baseUrl: string, adminPassword: string, count: number): Promise<BenchNode[]> {
  const enrollmentToken = await createEnrollmentToken(baseUrl, await logIn(baseUrl, 'admin', adminPassword));
  const nodes: BenchNode[] = [];
  for (let n = 1; n <= count; n += 1) {
    const name = `bench-node-${n}`;
    const registered = await postJson<{ node_id: number; name: string; node_token: string }>(
      `${baseUrl}/api/workers/register`,
      { hostname: name, node_id: name },
      enrollmentToken,
    );
    nodes.push({ id: registered.node_id, name: registered.name, token: registered.node_token });
  }
  return nodes;
}
