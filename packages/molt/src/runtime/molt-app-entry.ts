import { createRequire } from 'node:module';

/** Where `@molt/app` lives for this copy of molt: the one copy every app config and worker uses. */
export const MOLT_APP_ENTRY = createRequire(import.meta.url).resolve('@molt/app');
