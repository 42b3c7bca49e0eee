import { ApiError } from './client.js';
import { MoltError } from '../errors.js';

/** Wraps a command: errors go to stderr as `error [CODE]: message` with exit code 1. */
export function run<A extends unknown[]>(fn: (...args: A) => Promise<void | number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      const code = await fn(...args);
      if (typeof code === 'number' && code !== 0) process.exitCode = code;
    } catch (err) {
      if (err instanceof ApiError || err instanceof MoltError) console.error(`error [${err.code}]: ${err.message}`);
      else console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    }
  };
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Progress lines go to stderr so that stdout stays clean for --json. */
export const say = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
