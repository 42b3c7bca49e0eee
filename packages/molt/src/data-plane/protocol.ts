import type { WorkerAddress } from '../gateway/target.js';
import type { WorkerExit } from '../control-plane/worker-process.js';

/** A worker as the data plane reports it to a control plane that (re)connects. */
export interface DataPlaneWorker {
  id: string;
  namespace: string;
  app: string;
  /** The release it runs now (a hot upgrade changes it). */
  releaseId: string;
  /** The worker runtime it was started with; the data plane's own is in `dp.info`. */
  runtime: string;
  pid: number | null;
  address: WorkerAddress | null;
  /** starting: spawned, not yet ready; running: passed readiness; exited: gone (with how). */
  state: 'starting' | 'running' | 'exited';
  exit?: WorkerExit;
  /** Whether the gateway sends it requests. */
  routed: boolean;
  /** Whether it is swapping modules now (a hot upgrade the data plane sent and has no answer to yet). */
  upgrading: boolean;
  /** How its last swap ended, to which release: what a control plane that died before the answer missed. */
  lastUpgrade?: { toRelease: string; ok: boolean; error?: string };
}

/** What the gateway knows of an app: who may call it, whether it runs, the hostnames it claimed. */
export interface GatewayApp {
  namespace: string;
  name: string;
  public: boolean;
  paused: boolean;
  domains: string[];
}

export interface TargetStats {
  outstanding: number;
  serverErrors: number;
}

/** Where the data plane listens for its control plane, and the control plane for API requests. */
export const DATA_PLANE_SOCKET = 'data-plane.sock';
export const CONTROL_PLANE_SOCKET = 'control-plane.sock';
/** Where `molt server --takeover` asks the running data plane to hand over. */
export const TAKEOVER_SOCKET = 'takeover.sock';

/**
 * What `molt server --takeover` sends, one JSON line: the command line (and its cwd and env) of the
 * new data plane. It is answered with lines of progress, then `done` or an error.
 */
export interface TakeoverRequest {
  argv: string[];
  cwd?: string;
  env?: Record<string, string>;
}

export type TakeoverAnswer = { progress: string } | { done: true; pid: number } | { error: string };
