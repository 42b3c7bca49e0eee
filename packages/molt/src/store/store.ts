import type {
  AppRow,
  DomainRow,
  EventRow,
  LeaseRow,
  NamespaceQuota,
  NamespaceRow,
  ReleaseRow,
  RevisionRow,
  RevisionStatus,
  RolloutPhase,
  RolloutProgress,
  RolloutRow,
  TimerRow,
  TokenRow,
  VolumeGrantRow,
  VolumeRevisionRow,
  VolumeRow,
  WorkerRow,
  WorkerStatus,
} from './types.js';

/**
 * Everything the server knows, behind one interface. SQLite (`store/sqlite`) is the embedded
 * default; PostgreSQL (`store/postgres`) serves several control-plane replicas. Both run the
 * same queries through kysely and pass the same test suite.
 */
export interface Store {
  /** Which dialect serves this store (`sqlite` or `postgres`). */
  readonly dialect: string;
  /** Creates or upgrades the schema. */
  migrate(): Promise<void>;
  /** Closes connections. */
  close(): Promise<void>;

  /** Creates a namespace with the next uid offset; false if it already existed. */
  createNamespace(name: string): Promise<boolean>;
  /** All namespaces, by name. */
  listNamespaces(): Promise<NamespaceRow[]>;
  /** One namespace, or undefined. */
  getNamespace(name: string): Promise<NamespaceRow | undefined>;
  /** Sets a namespace's quota (null or `{}` removes it). */
  setNamespaceQuota(name: string, quota: NamespaceQuota | null): Promise<void>;

  /** Records that a namespace may use these blobs without sending them (it sent them, or holds a tree of them). */
  grantBlobs(namespace: string, hashes: Iterable<string>): Promise<void>;
  /** The hashes among `hashes` granted to the namespace. */
  grantedBlobs(namespace: string, hashes: string[]): Promise<Set<string>>;
  /** Whether any blob grant is recorded (false on a store made before grants existed). */
  hasBlobGrants(): Promise<boolean>;
  /** Bytes the namespace's volume revisions added, summed (what its volume quota counts). */
  volumeBytes(namespace: string): Promise<number>;
  /** How many releases the namespace keeps. */
  countReleases(namespace: string): Promise<number>;

  /** Stores a token (its hash only). */
  insertToken(token: TokenRow): Promise<void>;
  /** Looks a token up by the sha256 of its secret. */
  tokenByHash(hash: string): Promise<TokenRow | undefined>;
  /** One token by id. */
  getToken(id: string): Promise<TokenRow | undefined>;
  /** Tokens of one namespace, or all when undefined. */
  listTokens(namespace?: string): Promise<TokenRow[]>;
  /** Marks a token revoked; false if unknown or already revoked. */
  revokeToken(id: string, at: string): Promise<boolean>;

  /** Records a release (idempotent per namespace and id). */
  insertRelease(release: ReleaseRow): Promise<void>;
  /** One release of a namespace. */
  getRelease(namespace: string, id: string): Promise<ReleaseRow | undefined>;
  /** Deletes a release of a namespace. */
  deleteRelease(namespace: string, id: string): Promise<void>;
  /** Releases of a namespace, newest first, optionally of one app. */
  listReleases(namespace: string, app?: string): Promise<ReleaseRow[]>;

  /** Creates an app; throws if the name is taken. */
  insertApp(app: AppRow): Promise<void>;
  /** One app. */
  getApp(namespace: string, name: string): Promise<AppRow | undefined>;
  /** Apps of a namespace, or of all namespaces. */
  listApps(namespace?: string): Promise<AppRow[]>;
  /** Changes fields of an app. */
  updateApp(namespace: string, name: string, patch: Partial<Omit<AppRow, 'namespace' | 'name'>>): Promise<void>;
  /**
   * Takes the app's rollout lock: sets `rolloutId` only if no rollout holds it.
   * Returns false when another rollout is in progress.
   */
  claimRollout(namespace: string, name: string, rolloutId: string): Promise<boolean>;
  /** Deletes an app with its revisions, workers, rollouts and events. */
  deleteApp(namespace: string, name: string): Promise<void>;

  /** Records a new revision; its number must be the next one. */
  insertRevision(rev: RevisionRow): Promise<void>;
  /** One revision. */
  getRevision(namespace: string, app: string, revision: number): Promise<RevisionRow | undefined>;
  /** All revisions of an app, oldest first. */
  listRevisions(namespace: string, app: string): Promise<RevisionRow[]>;
  /** Moves a revision to `status` (with its reason); throws `IllegalTransition` unless the revision table allows it. */
  setRevisionStatus(namespace: string, app: string, revision: number, status: RevisionStatus, reason?: string | null): Promise<void>;

  /** Records a worker. */
  insertWorker(worker: WorkerRow): Promise<void>;
  /** Changes fields of a worker other than its status. */
  updateWorker(id: string, patch: Partial<Omit<WorkerRow, 'id' | 'status'>>): Promise<void>;
  /** Moves a worker to `status` with the fields given; throws `IllegalTransition` unless the worker table allows it. */
  setWorkerStatus(id: string, status: WorkerStatus, patch?: Partial<Omit<WorkerRow, 'id' | 'status'>>): Promise<void>;
  /** Workers of an app; only live ones unless `all`. */
  listWorkers(namespace: string, app: string, all?: boolean): Promise<WorkerRow[]>;
  /** Every worker not TERMINATED or ERROR, across apps (for recovery at start). */
  listLiveWorkers(): Promise<WorkerRow[]>;

  /** Records a rollout. */
  insertRollout(rollout: RolloutRow): Promise<void>;
  /**
   * Ends a rollout (`succeeded` or `failed`, with the reason); throws `IllegalTransition` unless it
   * was running. With `event`, that event is written in the same transaction (a rollout is never
   * seen ended without its final event) and returned.
   */
  finishRollout(id: string, phase: RolloutPhase, reason?: string | null, event?: Omit<EventRow, 'id'>): Promise<EventRow | undefined>;
  /** One rollout. */
  getRollout(id: string): Promise<RolloutRow | undefined>;
  /** An app's latest rollout (the one under way, or the last to end). */
  lastRollout(namespace: string, app: string): Promise<RolloutRow | undefined>;
  /** Rollouts still marked running (for recovery at start). */
  listRunningRollouts(): Promise<RolloutRow[]>;
  /** Records how far a rollout has come (written before the step it allows). */
  setRolloutProgress(id: string, progress: RolloutProgress): Promise<void>;
  /** What `setRolloutProgress` last wrote, or undefined. */
  getRolloutProgress(id: string): Promise<RolloutProgress | undefined>;
  /** How many workers of an app ended in ERROR since `since` (crashes and failed starts: what backoff counts). */
  countFailedWorkers(namespace: string, app: string, since: string): Promise<number>;

  /**
   * Makes `domains` exactly the hostnames the app holds, all or none: when another app holds one
   * of them nothing changes and that holder is returned. `dryRun` only looks.
   */
  claimDomains(namespace: string, app: string, domains: string[], dryRun?: boolean): Promise<DomainRow | undefined>;
  /** Every claimed hostname. */
  listDomains(): Promise<DomainRow[]>;
  /** A setting the whole server shares: the one stored, or `initial` stored now if there is none (the first writer wins). */
  setting(name: string, initial: string): Promise<string>;

  /** Sets a timer (replacing the one of the same key). */
  putTimer(timer: TimerRow): Promise<void>;
  /** Removes a timer, only if it is still the setting `id` (a later setting of the key stays). */
  deleteTimer(key: string, id: string): Promise<void>;
  /** Every timer, soonest first. */
  listTimers(): Promise<TimerRow[]>;

  /** Creates a volume; throws if the name is taken in its namespace. */
  insertVolume(volume: VolumeRow): Promise<void>;
  /** One volume by namespace and name. */
  getVolume(namespace: string, name: string): Promise<VolumeRow | undefined>;
  /** Volumes of a namespace, by name. */
  listVolumes(namespace: string): Promise<VolumeRow[]>;
  /** Volumes other namespaces shared with this one, with the grant. */
  listSharedVolumes(namespace: string): Promise<(VolumeRow & { write: boolean })[]>;
  /**
   * Records the next revision of a volume if `latestSeq` is still `expectedSeq` (else false: a
   * concurrent push won), and moves the volume's latest to it.
   */
  insertVolumeRevision(rev: VolumeRevisionRow, expectedSeq: number): Promise<boolean>;
  /** Revisions of a volume, oldest first. */
  listVolumeRevisions(volumeId: string): Promise<VolumeRevisionRow[]>;
  /** Deletes a volume with its revisions and grants. */
  deleteVolume(volumeId: string): Promise<void>;
  /** Gives a namespace read (and with `write`, push) access; replaces an earlier grant. */
  putVolumeGrant(grant: VolumeGrantRow): Promise<void>;
  /** Takes a grant away; false if there was none. */
  deleteVolumeGrant(volumeId: string, namespace: string): Promise<boolean>;
  /** Grants of a volume. */
  listVolumeGrants(volumeId: string): Promise<VolumeGrantRow[]>;

  /** Records that `name` (a server) is alive at `at`. */
  beat(name: string, at: string): Promise<void>;
  /** When `name` was last seen alive, or undefined. */
  lastBeat(name: string): Promise<string | undefined>;

  /**
   * Takes the lease `name` for `holder` until `expiresAt`, or renews it: only if no one holds it,
   * its holder's time ran out before `now`, or `holder` holds it already (then `info` is updated).
   * Answers who holds it after the attempt: `holder` when it was taken or renewed.
   */
  acquireLease(name: string, holder: string, info: string, now: string, expiresAt: string): Promise<LeaseRow>;
  /** Gives the lease up, if `holder` holds it. */
  releaseLease(name: string, holder: string): Promise<void>;

  /** Stores blobs in the database (those it has already are left as they are). */
  putBlobs(blobs: { hash: string; data: Buffer }[]): Promise<void>;
  /** Which of `hashes` the database lacks. */
  missingBlobs(hashes: string[]): Promise<string[]>;
  /** A blob from the database, or undefined. */
  getBlob(hash: string): Promise<Buffer | undefined>;

  /** Appends an event and returns it with its id. */
  appendEvent(event: Omit<EventRow, 'id'>): Promise<EventRow>;
  /** Events after `afterId`, filtered by app and/or rollout, oldest first. */
  listEvents(filter: { namespace?: string; app?: string; rolloutId?: string; afterId?: number; limit?: number }): Promise<EventRow[]>;
}
