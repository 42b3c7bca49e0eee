/** Resources a worker asks for; the scheduler places it where they are free. */
export interface ResourceRequests {
  /** CPU cores, fractions allowed (`0.5`). */
  cpu?: number;
  /** Memory limit in MiB; the V8 heap follows it. */
  memoryMb?: number;
  /** Number of GPUs. */
  gpu?: number;
  /** Acceptable GPU models, any of them (`["A100 40G", "RTX 4090"]`). */
  gpuConstraints?: string[];
}

/**
 * A volume the app reads: the latest revision (default) or a pinned one. `name` is a volume of the
 * app's namespace, or `owner-namespace/name` for one shared with it. `init` is a directory, relative
 * to the config, whose files become the first revision when `molt app prepare` creates the volume.
 */
export type VolumeRef = { name: string; useLatest?: true; init?: string } | { name: string; revision: string; init?: string };

/** How molt decides that a new worker may take traffic. */
export interface ReadinessConfig {
  /** Path requested with GET; any 2xx means ready. Default `/`. */
  path?: string;
  /** How long a new worker has to become ready. Default 30000. */
  timeoutMs?: number;
}

/** How rolling updates replace workers. */
export interface RolloutConfig {
  /** New workers started at once during a rolling update. Default 1; 0 replaces in place (needs maxUnavailable ≥ 1). */
  maxSurge?: number;
  /** Ready workers the update may take away below the current count. Default 0. */
  maxUnavailable?: number;
  /** How long a draining worker keeps open streams before they are cut. Default 30000. */
  drainTimeoutMs?: number;
  /** Time between SIGTERM and SIGKILL. Default 5000. */
  stopGraceMs?: number;
}

/** How hot upgrades (in place) run. */
export interface HotConfig {
  /** How long the first upgraded worker is watched (crash, 5xx) before the next. Default 1000. */
  canaryWindowMs?: number;
  /** How long a process may take to finish its current message when suspended. Default 5000. */
  suspendTimeoutMs?: number;
  /** Module versions a worker may retain before it is recycled by a rolling replacement. Default 2000. */
  maxRetainedModules?: number;
  /** How long a hot-upgraded revision runs healthy before workers that restart boot it. Default 10000. */
  permanentAfterMs?: number;
}

/** An app's configuration, as written in `molt.config.ts`. */
export interface AppConfig {
  /** App name: lower-case letters, digits and dashes. */
  name: string;
  /** Entry module, relative to the config file. Default `index.ts`. */
  entry?: string;
  /** Number of workers. Default 1. */
  workers?: number;
  readiness?: ReadinessConfig;
  /** Environment variables given to every worker. */
  env?: Record<string, string>;
  resources?: ResourceRequests;
  volumes?: VolumeRef[];
  /** `false` makes the app immutable: updates are refused. Default `true`. */
  updatable?: boolean;
  /** `true` lets anyone call the app's routes without a token. Default `false`. */
  public?: boolean;
  /**
   * Hostnames the app answers at its root, besides `<app>.<namespace>.<domain>` of the server's
   * `--domain`. Each is the app's alone on the server: a deploy naming one another app holds is refused.
   */
  domains?: string[];
  rollout?: RolloutConfig;
  hot?: HotConfig;
  /**
   * Receives the generated upgrade plan's steps and returns the ones to use (Distillery's appup
   * transforms), e.g. to add an `apply` step that migrates data. Applied by `molt app update`.
   */
  planTransform?: (plan: { from: string; to: string; up: PlanStep[]; down: PlanStep[] }) => { up: PlanStep[]; down: PlanStep[] };
}

/** One instruction of an upgrade plan (see `molt release plan`). */
export interface PlanStep {
  op: 'update' | 'load' | 'add' | 'remove' | 'apply';
  module: string;
  processes?: string[];
  fn?: string;
  extra?: unknown;
  reason?: string;
}

/** What an app's entry module default-exports: the web-standard `fetch` shape. */
export interface AppModule {
  fetch(request: Request): Response | Promise<Response>;
  /** Optional WebSocket/upgrade handler, given the raw Node request and socket. */
  upgrade?(request: unknown, socket: unknown, head: Uint8Array): void;
}

/**
 * Declares an app. Returns the config unchanged; molt validates it when it builds.
 *
 * @example
 * ```ts
 * import { defineApp } from '@molt/app';
 * export default defineApp({ name: 'get-start', entry: 'app.ts', readiness: { path: '/hello' } });
 * ```
 */
export function defineApp<const T extends AppConfig>(config: T): T {
  return config;
}
