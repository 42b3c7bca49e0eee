import { defineApp } from '@molt/app';

export default defineApp({
  name: 'get-start',
  entry: 'app.ts',
  workers: 1,
  readiness: { path: '/healthz' },
});
