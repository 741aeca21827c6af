import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/** Lint rules for the whole tree, run by `npm run lint` (part of `npm test`); layout is Prettier's. */
export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'bench/out/', 'test-artifacts/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // A leading underscore marks what is deliberately left unused (a rest sibling dropped, a callback's first argument).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      // A file past this holds more than one idea: split it where the ideas part.
      'max-lines': ['error', { max: 400 }],
    },
  },
  {
    files: ['**/*.ts'],
    // TypeScript itself refuses undefined names, with the right globals for each file.
    rules: { 'no-undef': 'off' },
  },
  {
    files: ['test/**', '**/*.test.ts', 'bench/**'],
    // Response bodies of the API under test are whatever the server sent.
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  { files: ['src/ui/public/**/*.js'], languageOptions: { globals: globals.browser } },
  { files: ['**/*.cjs'], languageOptions: { sourceType: 'commonjs', globals: globals.node } },
  { files: ['**/*.mjs', '*.js'], languageOptions: { globals: globals.node } },
);
