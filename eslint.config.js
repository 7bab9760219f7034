/**
 * ESLint (flat config): neostandard's rules and style in TypeScript mode, plus a few type-aware
 * rules from typescript-eslint. `npm run lint` runs it; scripts/test.sh runs it after the typecheck.
 *
 * Type information comes from the TypeScript project service: each file is checked with its
 * nearest tsconfig.json, so web/src uses web/tsconfig.json (DOM, Preact JSX) and the rest the
 * top-level tsconfig.json.
 */
import neostandard, { resolveIgnoresFromGitignore } from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: resolveIgnoresFromGitignore()
  }),
  {
    name: 'mqim/type-aware',
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname
      }
    },
    rules: {
      // A promise is either awaited or handed to `void` on purpose (no-floating-promises accepts
      // `void promise` as "deliberately not awaited"); `void` stays banned inside expressions.
      'no-void': ['error', { allowAsStatement: true }],
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      '@typescript-eslint/no-explicit-any': 'error'
    }
  }
]
