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
  /** The volumes this worker reads, by the name the app's config gives them. */
  volumes: Record<string, VolumeInfo>;
}

/** A volume as the worker sees it: a read-only directory holding one revision. */
export interface VolumeInfo {
  path: string;
  revision: string;
}

const info: RuntimeInfo = {
  workerId: readEnv('MOLT_WORKER_ID', 'local'),
  app: readEnv('MOLT_APP', ''),
  namespace: readEnv('MOLT_NAMESPACE', 'default'),
  revision: Number(readEnv('MOLT_REVISION', '0')),
  release: readEnv('MOLT_RELEASE', ''),
  volumes: readVolumes(),
};

function readVolumes(): Record<string, VolumeInfo> {
  try {
    return JSON.parse(readEnv('MOLT_VOLUMES', '{}')) as Record<string, VolumeInfo>;
  } catch {
    return {};
  }
}

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
  /**
   * The directory of a volume the app's config names, e.g. `runtime.volume('my-model').path`.
   * Throws, naming the volumes there are, when the app's config does not list it.
   */
  volume(name: string): VolumeInfo {
    const v = info.volumes[name];
    if (!v) {
      const known = Object.keys(info.volumes);
      throw new Error(`volume ${name} is not in this app's config (volumes: ${known.length ? known.join(', ') : 'none'}); add { name: '${name}' } to volumes in molt.config.ts`);
    }
    return v;
  },
};
