import { request } from 'undici';

/** A node registered through the real API, with the token it allocates with. */
export interface BenchNode {
  id: number;
  name: string;
  token: string;
}

async function postJson<T>(url: string, body: unknown, bearer?: string): Promise<T> {
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`POST ${new URL(url).pathname} answered ${response.statusCode}: ${text}`);
  return JSON.parse(text) as T;
}

/** Logs in as admin, creates an enrollment token, and registers `count` nodes with it (as real nodes do). */
export async function registerNodes(baseUrl: string, adminPassword: string, count: number): Promise<BenchNode[]> {
  const { token: adminToken } = await postJson<{ token: string }>(`${baseUrl}/auth/login`, { username: 'admin', password: adminPassword });
  const { token: enrollmentToken } = await postJson<{ token: string }>(`${baseUrl}/api/enrollment-tokens`, { note: 'bench' }, adminToken);
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
