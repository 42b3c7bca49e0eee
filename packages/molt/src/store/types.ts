import type { AppSpec } from '../config/app-spec.js';
import type { DetailStatus, RevisionStatus, RolloutPhase, WorkerStatus } from './lifecycle.js';

export type { DetailStatus, RevisionStatus, RolloutPhase, WorkerStatus };

export type Role = 'admin' | 'deployer' | 'invoker';

export interface NamespaceRow {
  name: string;
  createdAt: string;
  /** Its workers run as uid (start of the server's worker uid range + uidOffset). */
  uidOffset: number;
  /** Limits the server admin set (`molt namespace quota`); null for none. */
  quota: NamespaceQuota | null;
}

/** Per-namespace limits, in the manner of a Kubernetes ResourceQuota; a field left out is unlimited. */
export interface NamespaceQuota {
  /** Workers of all its apps together (each app's desired count, a rolling update's surge included). */
  workers?: number;
  /** CPU cores its workers request in all. */
  cpu?: number;
  /** MiB of memory its workers request in all. */
  memoryMb?: number;
  /** GPUs its workers request in all. */
  gpus?: number;
  /** Bytes its volumes' revisions hold (each revision counts what it added over the one before). */
  volumeBytes?: number;
  /** Releases it keeps. */
  releases?: number;
}

export interface TokenRow {
  id: string;
  name: string;
  /** The namespace the token acts in; `*` for the server's admin token. */
  namespace: string;
  role: Role;
  hash: string;
  createdAt: string;
  revokedAt: string | null;
}

export interface ReleaseManifest {
  /** App name the release was built from. */
  app: string;
  /** Version from the app's package.json, or 0.0.0. */
  version: string;
  /** Node version the release was built with. */
  node: string;
  /** Hash of the dependency lockfile and production dependency tree. */
  dependencyHash: string;
  /** Hash of the app config that the release was built with. */
  configHash: string;
  /** Entry module, relative to the release root. */
  entry: string;
  /** Every app module: its path, content hash, the app modules it imports, and what it defines. */
  modules: ReleaseModule[];
}

export interface ReleaseModule {
  path: string;
  /** The app's own file it was compiled from (`lib/x.ts`); releases built before it was kept lack it. */
  source?: string;
  hash: string;
  imports: string[];
  /** Names of the processes it defines (`defineProcess({ name })`). */
  processes?: string[];
  /** Whether it defines a `codeChange`. */
  codeChange?: boolean;
  /** Whether it exports `configChange` (a runtime config change applies in place). */
  configChange?: boolean;
}

export interface ReleaseRow {
  id: string;
  namespace: string;
  app: string;
  manifest: ReleaseManifest;
  files: number;
  size: number;
  createdAt: string;
}

export interface AppRow {
  namespace: string;
  name: string;
  id: string;
  /** Revision that serves traffic; 0 before the first successful deploy. */
  currentRevision: number;
  /**
   * After a hot upgrade, the revision a restarting worker boots until the upgraded one has run
   * healthy for `hot.permanentAfterMs` (OTP's permanent release); null when it is the current one.
   */
  permanentRevision: number | null;
  /** While a hot-upgraded revision is on probation, when it ends (ISO time); null otherwise. */
  probationUntil: string | null;
  immutable: boolean;
  paused: boolean;
  /** The rollout in progress, if any; one at a time per app. */
  rolloutId: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface RevisionRow {
  namespace: string;
  app: string;
  revision: number;
  releaseId: string;
  spec: AppSpec;
  status: RevisionStatus;
  reason: string | null;
  /** What caused it: `create`, `update`, `rollback`, `volume …`. */
  cause: string;
  createdAt: string;
  /** The volume revisions it runs with. */
  volumes: ResolvedVolume[];
}

export interface WorkerRow {
  id: string;
  namespace: string;
  app: string;
  revision: number;
  status: WorkerStatus;
  detailStatus: DetailStatus | null;
  detail: string | null;
  pid: number | null;
  port: number | null;
  createdAt: string;
  deletedAt: string | null;
  /** Its resources as held: `cpu 0.5, 128 MiB (cgroup v1), GPU 0`, or why they are not enforced. */
  limits: string | null;
  /** How it is sandboxed (`sandbox, uid 100001`), or `NOT ISOLATED: <why>`. */
  isolation: string | null;
}

export interface RolloutRow {
  id: string;
  namespace: string;
  app: string;
  fromRevision: number;
  toRevision: number;
  strategy: 'rolling' | 'hot';
  phase: RolloutPhase;
  reason: string | null;
  createdAt: string;
  finishedAt: string | null;
}

export interface VolumeRow {
  id: string;
  namespace: string;
  name: string;
  /** Sequence number of the newest revision; 0 before the first push. */
  latestSeq: number;
  createdAt: string;
  updatedAt: string;
}

export interface VolumeRevisionRow {
  volumeId: string;
  seq: number;
  /** `NNNNNN-xxx`: the sequence, a dash, the first 3 hex digits of the tree hash. */
  revision: string;
  treeHash: string;
  files: number;
  size: number;
  createdAt: string;
  /** Id of the token that pushed it. */
  createdBy: string;
  /** Bytes of the blobs it holds that the revision before it did not (what volume quotas count). */
  addedBytes: number;
}

export interface VolumeGrantRow {
  volumeId: string;
  /** The namespace given access. */
  namespace: string;
  /** Whether it may push, besides reading and mounting. */
  write: boolean;
  createdAt: string;
}

/** A volume revision an app revision runs with, resolved when that revision was made. */
export interface ResolvedVolume {
  /** The name the app's config uses (`vol`, or `other-ns/vol` for a shared one). */
  ref: string;
  volumeId: string;
  namespace: string;
  name: string;
  revision: string;
  treeHash: string;
  /** Follows new revisions (true) or stays pinned. */
  useLatest: boolean;
}

export interface EventRow {
  id: number;
  ts: string;
  namespace: string;
  app: string | null;
  rolloutId: string | null;
  workerId: string | null;
  level: 'info' | 'warn' | 'error';
  type: string;
  message: string;
}

/**
 * What a rollout under way keeps in the store so that a control plane that starts again goes on
 * with it: a rolling update needs nothing more than its revisions and the workers; a hot one keeps
 * its plan and its canary's deadline; a recycle names the worker it replaces.
 */
export type RolloutProgress =
  | {
      kind: 'hot';
      up: unknown[];
      down: unknown[];
      direction: 'up' | 'down';
      /** The canary's watch: until when, and its 5xx count when the watch began. */
      canary?: { workerId: string; until: string; serverErrorsBefore: number; done?: boolean };
    }
  | { kind: 'recycle'; workerId: string; message: string; reason: string };

/** Work promised for later: due at `dueAt`, one per `key`; `id` tells one setting of the key from the next. */
export interface TimerRow {
  key: string;
  id: string;
  kind: string;
  namespace: string;
  app: string;
  dueAt: string;
  payload: Record<string, unknown>;
}

/** A hostname an app claimed (`domains` in its config): one app per name on the whole server. */
export interface DomainRow {
  domain: string;
  namespace: string;
  app: string;
  createdAt: string;
}

/** Who holds a lease (the control plane that leads), until when, and what it says of itself. */
export interface LeaseRow {
  name: string;
  holder: string;
  info: string;
  expiresAt: string;
}
