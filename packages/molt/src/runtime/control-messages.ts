import type { PlanStep } from '@molt/app';
/**
 * Messages on a worker's control channel: the socket at its fd 3 from the data plane that started
 * it, or a connection to its control socket from a data plane that adopts it. Either way the data
 * plane's first message is `hello` with the worker's secret; a connection to the control socket
 * that does not give it is closed.
 */
export type WorkerToServer =
  | { type: 'listening'; port?: number; socket?: string }
  | { type: 'load-failed'; error: string }
  | { type: 'upgrade-result'; id: string; result: UpgradeResult }
  | Adopted;

export type ServerToWorker = { type: 'hello'; secret: string } | { type: 'drain' } | UpgradeRequest;

/** A worker's answer to the `hello` of a data plane that adopts it: what it is doing now. */
export interface Adopted {
  type: 'adopted';
  /** The release it runs (a hot upgrade finished while no data plane watched is counted). */
  release: string;
  /** Where it serves; undefined while its app still loads. */
  listening?: { port?: number; socket?: string };
  draining: boolean;
}

/**
 * One step of an upgrade plan, as the worker carries it out (the type apps see as `PlanStep`):
 * `update` a module that defines processes (suspend, codeChange, resume); `load` one that defines
 * none, or is loaded again because it imports one that changed; `add`/`remove` a module only one
 * side has; `apply` an exported function of the target release (`fn`, given `extra`).
 */
export type UpgradeInstruction = PlanStep;

export interface UpgradeRequest {
  type: 'upgrade';
  id: string;
  toRelease: string;
  /** Where the target release is materialized. */
  releaseDir: string;
  direction: 'up' | 'down';
  instructions: UpgradeInstruction[];
  /** How long a process may take to finish its current message when suspended. */
  suspendTimeoutMs: number;
  /** The app's env when it changes: given to the entry's `configChange`, then set in the worker. */
  env?: { from: Record<string, string>; to: Record<string, string> };
}

/**
 * How long each step of a swap took in the worker (ms): loading the new modules, suspending the
 * processes, migrating their state (codeChange, apply steps, configChange), and the swap itself
 * with the resume. What the dashboard shows per worker.
 */
export interface UpgradePhases {
  loadMs: number;
  suspendMs: number;
  migrateMs: number;
  swapMs: number;
}

export type UpgradeResult =
  | { ok: true; durationMs: number; retainedModules: number; release: string; phases?: UpgradePhases }
  | { ok: false; phase: 'load' | 'suspend' | 'codeChange' | 'apply' | 'configChange'; module?: string; error: string };
