// `node --import tsx --import ./test/no-native-sqlite.mjs …`: any import of the server's database
// stack (the native SQLite driver, pg, kysely) or of Fastify fails, so a process that runs proves it
// needs none of them. It sees ESM imports only, not require(): src/ imports all four as ESM.
import { register } from 'node:module';

const hooks = `
const forbidden = ['better-sqlite3', 'pg', 'kysely', 'fastify'];
export async function resolve(specifier, context, nextResolve) {
  const name = forbidden.find((each) => specifier === each || specifier.startsWith(each + '/'));
  if (name) throw new Error('no-native-sqlite: this process must not load ' + name);
  return nextResolve(specifier, context);
}
`;

// The hooks run on the loader thread, so they are passed as a module of their own.
register(`data:text/javascript,${encodeURIComponent(hooks)}`);
