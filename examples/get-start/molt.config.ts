import { defineApp } from '@molt/app';

export default defineApp({
  name: 'get-start',
  entry: 'app.ts',
  workers: 1,
  readiness: { path: '/healthz' },
  // `molt app prepare` creates the volume from ./volume the first time; edit it later in the
  // path `molt volume get get-start-volume` prints, and `molt app prepare` pushes the change.
  volumes: [{ name: 'get-start-volume', useLatest: true, init: './volume' }],
});
