/**
 * The boundaries between features, checked by `npm run lint:deps` (part of `npm test`).
 * A rule names what may not depend on what, and why.
 */
module.exports = {
  forbidden: [
    {
      name: 'routes-import-no-routes',
      comment: 'A route file registers routes; what two route files share belongs in a service or in http/.',
      severity: 'error',
      from: { path: '\\.routes\\.ts$' },
      to: { path: '\\.routes\\.ts$' },
    },
    {
      name: 'app-context-stays-in-http',
      comment: 'Services take (db, deps, input, now) with a small deps object; only routes, http/, loops.ts and main.ts see the whole AppContext.',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/http/', '\\.routes\\.ts$', '^src/loops\\.ts$', '^src/main\\.ts$', '\\.test\\.ts$'] },
      to: { path: '^src/http/context\\.ts$' },
    },
    {
      name: 'agent-loads-no-server',
      comment:
        'The node agent installs without a compiler: it loads no database driver, Kysely, Fastify or server module (what it loads in all is tested by test/agent-packaging.test.ts).',
      severity: 'error',
      from: { path: '^src/agent/', pathNot: '\\.test\\.ts$' },
      to: { path: ['^src/db/', '^src/http/', 'node_modules/(better-sqlite3|pg|kysely|fastify)/'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-test-code-in-production',
      comment: 'Production modules never import test helpers.',
      severity: 'error',
      from: { path: '^src/', pathNot: '\\.test\\.ts$' },
      to: { path: ['^test/', '\\.test\\.ts$'] },
    },
    {
      name: 'no-circular',
      comment: 'Modules that load each other at run time load half-initialised; type-only imports are erased and do not count.',
      severity: 'error',
      from: {},
      to: { circular: true, dependencyTypesNot: ['type-only'], viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
  },
};
