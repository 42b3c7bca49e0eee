import type { PlanStep } from '@molt/app';
/** Messages on the control channel between the server and a worker (Node IPC). */
export type WorkerToServer =
  | { type: 'listening'; port?: number; socket?: string }
  | { type: 'load-failed'; error: string }
  | { type: 'upgrade-result'; id: string; result: UpgradeResult };

export type ServerToWorker = { type: 'drain' } | UpgradeRequest;

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

export type UpgradeResult =
  | { ok: true; durationMs: number; retainedModules: number; release: string }
  | { ok: false; phase: 'load' | 'suspend' | 'codeChange' | 'apply' | 'configChange'; module?: string; error: string };
