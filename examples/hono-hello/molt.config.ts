import { defineApp } from '@molt/app';

export default defineApp({ name: 'hono-hello', entry: 'index.ts', readiness: { path: '/' } });
