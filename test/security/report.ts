import { appendFileSync } from 'node:fs';
import { expect } from 'vitest';

/** One attack as docs/security.md's table shows it. */
export interface AttackRecord {
  /** The boundary it tries (a row group of the table). */
  boundary: string;
  attack: string;
  expected: string;
  /** What the run saw: statuses, codes, files found or not. */
  observed: string;
  /** Whether the attack was refused (it got nothing through). */
  refused: boolean;
}

/**
 * Records an attack's outcome for the table in docs/security.md (`npm run security-report` sets
 * MOLT_SECURITY_REPORT and rebuilds the table from a real run), with the name of the test that ran it.
 */
export function record(r: AttackRecord): void {
  const file = process.env.MOLT_SECURITY_REPORT;
  if (!file) return;
  const test = expect.getState().currentTestName ?? '';
  appendFileSync(file, `${JSON.stringify({ ...r, test, file: expect.getState().testPath?.replace(/^.*\/test\//, 'test/') })}\n`);
}
