import { configDefaults, defineConfig } from 'vitest/config';

/**
 * The suite runs twice (`npm test`): on SQLite, then on PostgreSQL (MOLT_TEST_STORE=postgres). The
 * second run leaves out the files whose subject lies below the store, which run the same on either:
 * the sandbox and cgroups, the worker runtime and `app run`, builds, archive parsing, the data dir
 * lock, the worker's control socket and output, framework compatibility and the browser.
 */
const BELOW_THE_STORE = [
  'test/compat/**',
  'test/browser/**',
  'test/resources.test.ts',
  'test/builds.test.ts',
  'test/app-run.test.ts',
  'test/worker-runtime.test.ts',
  'test/security/sandbox.test.ts',
  'test/security/trees.test.ts',
  'test/security/data-dir.test.ts',
  'test/security/control-socket.test.ts',
  'test/security/worker-output.test.ts',
];

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'packages/*/src/**/*.test.ts'],
    exclude: [...configDefaults.exclude, ...(process.env.MOLT_TEST_STORE === 'postgres' ? BELOW_THE_STORE : [])],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each file starts its own servers and workers; two at a time fit a 2-core machine.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
