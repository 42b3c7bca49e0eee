/** Facts about the worker this code runs in, set by the molt runtime. */
export interface RuntimeInfo {
  /** Worker id, as `molt worker list` shows it; `local` under `molt app run`. */
  workerId: string;
  /** App name. */
  app: string;
  /** Namespace of the app. */
  namespace: string;
  /** App revision this worker runs. */
  revision: number;
  /** Release id this worker runs. */
  release: string;
}

const info: RuntimeInfo = {
  workerId: readEnv('MOLT_WORKER_ID', 'local'),
  app: readEnv('MOLT_APP', ''),
  namespace: readEnv('MOLT_NAMESPACE', 'default'),
  revision: Number(readEnv('MOLT_REVISION', '0')),
  release: readEnv('MOLT_RELEASE', ''),
};

function readEnv(name: string, fallback: string): string {
  const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env;
  return env?.[name] ?? fallback;
}

/**
 * The runtime API.
 *
 * @example
 * ```ts
 * import { runtime } from '@molt/app';
 * console.log(`serving from ${runtime.info.workerId}`);
 * ```
 */
export const runtime = {
  info,
};
