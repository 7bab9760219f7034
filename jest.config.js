/**
 * jest + ts-jest in native ESM mode (run with NODE_OPTIONS=--experimental-vm-modules), in two
 * projects: `unit` (test/unit/: no database, no Redis, nothing outside this process but loopback
 * ports; `npm run test:unit` runs them on a bare machine) and `integration` (everything else, on
 * real sockets and the real databases that scripts/test.sh starts). `npm test` runs both.
 */
const common = {
  testEnvironment: 'node',
  testTimeout: 60000,
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151002] } }]
  }
}

export default {
  testTimeout: 60000,
  maxWorkers: 2,
  // a worker whose memory has grown past this after a test file is replaced by a fresh one: in ESM
  // mode every file's module graph stays behind in the worker, and one worker that ran ~40 files
  // reached the 4 GB heap limit and crashed mid-file (CI, 2026-11-30)
  workerIdleMemoryLimit: '1GB',
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    { ...common, displayName: 'integration', testMatch: ['<rootDir>/test/**/*.test.ts'], testPathIgnorePatterns: ['<rootDir>/test/unit/'] }
  ]
}
