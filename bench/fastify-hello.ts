/**
 * Fastify's own limit on this machine: the same Fastify as the server, one JSON POST route that
 * answers a small object, nothing else (no logger, plugins, auth or database). The bench starts it
 * as a child (`startFastifyHello`) and drives it with the same clients and bodies as /allocate.
 */
import Fastify from 'fastify';

const port = Number(process.env.PORT ?? 0);
const app = Fastify({ logger: false });

app.get('/health', async () => ({ status: 'ok' }));
app.post('/echo', async (request) => {
  const body = request.body as { node_id?: unknown };
  return { ok: true, node_id: body.node_id ?? null };
});

await app.listen({ host: '127.0.0.1', port });
process.once('SIGTERM', () => {
  void app.close().then(() => process.exit(0));
});
