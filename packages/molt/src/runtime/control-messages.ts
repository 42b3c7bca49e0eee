/** Messages on the control channel between the server and a worker (Node IPC). */
export type WorkerToServer =
  | { type: 'listening'; port: number }
  | { type: 'load-failed'; error: string }
  | { type: 'upgrade-result'; id: string; result: UpgradeResult };

export type ServerToWorker = { type: 'drain' } | UpgradeRequest;

/** One step of an upgrade plan, as the worker carries it out. */
export interface UpgradeInstruction {
  /**
   * `update`: a module that defines processes (suspend, codeChange, resume); `load`: a module
   * that defines none, or is loaded again because it imports one that changed; `add`/`remove`: a
   * module only one side has; `apply`: run an exported function of the target release.
   */
  op: 'update' | 'load' | 'add' | 'remove' | 'apply';
  module: string;
  /** Processes the module defines (by name). */
  processes?: string[];
  /** For `apply`: the exported function to run. */
  fn?: string;
  /** Passed to `codeChange` (update) or to the function (apply). */
  extra?: unknown;
  /** Why the step is there, for people reading the plan. */
  reason?: string;
}

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
}

export type UpgradeResult =
  | { ok: true; durationMs: number; retainedModules: number; release: string }
  | { ok: false; phase: 'load' | 'check' | 'suspend' | 'codeChange' | 'apply'; module?: string; error: string };
