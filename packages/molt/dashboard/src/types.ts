/** What the API answers, as the server's own types say (type-only: nothing of the server is bundled). */
export type { EventRow, ReleaseRow, RevisionRow, RolloutRow, TokenRow, VolumeRevisionRow, VolumeRow, WorkerRow } from '../../src/store/types.ts';
export type { LogLine } from '../../src/control-plane/log-hub.ts';
export type { MetricPoint } from '../../src/data-plane/metrics.ts';
export type { UpdateResult } from '../../src/control-plane/app-service.ts';
import type { AppSpec } from '../../src/config/app-spec.ts';
import type { ResolvedVolume, RolloutRow, WorkerRow } from '../../src/store/types.ts';
export type { AppSpec };

export interface Principal {
  tokenId: string;
  namespace: string;
  role: 'admin' | 'deployer' | 'invoker';
}

export interface AppSummary {
  namespace: string;
  name: string;
  currentRevision: number;
  permanentRevision: number | null;
  probationUntil: string | null;
  paused: boolean;
  rolloutId: string | null;
  release: string | null;
  spec: AppSpec | null;
  workers: { running: number; total: number };
  volumes: ResolvedVolume[];
  limits: string[];
  isolation: string[];
  route: string;
  lastRollout: RolloutRow | null;
  figures: { rps: number; errorsPerSec: number; p50Ms: number | null; p99Ms: number | null; at: number } | null;
}

export type WorkerView = WorkerRow & { release: string | null };

export interface NamespaceView {
  name: string;
  quota: Record<string, number | null> | null;
  usage: Record<string, number>;
}

export interface NodeView {
  name: string;
  cpu: number;
  memoryMb: number;
  used: { cpu: number; memoryMb: number };
  workers: number;
  gpus: { index: number; name?: string; memoryMb?: number; usedBy: string | null }[];
  gpuSource: string;
  limits: string;
  isolation: string;
}
