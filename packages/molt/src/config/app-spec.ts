import type { AppConfig, ResourceRequests, VolumeRef } from '@molt/app';

/** The validated, defaulted form of an app's config that the server stores with each revision. */
export interface AppSpec {
  name: string;
  entry: string;
  workers: number;
  readiness: { path: string; timeoutMs: number };
  env: Record<string, string>;
  resources: ResourceRequests;
  volumes: VolumeRef[];
  updatable: boolean;
  public: boolean;
  /** Hostnames the app claims, besides those under the server's `--domain`; absent in specs stored before them. */
  domains?: string[];
  rollout: { maxSurge: number; maxUnavailable: number; drainTimeoutMs: number; stopGraceMs: number };
  hot: { canaryWindowMs: number; suspendTimeoutMs: number; maxRetainedModules: number; permanentAfterMs: number };
}

export type { AppConfig };
