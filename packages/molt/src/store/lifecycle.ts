/**
 * The three state machines of molt, each with its one table of allowed moves. The store checks
 * every status write against its table and throws `IllegalTransition` on any other: a bug that
 * would write an impossible status fails loudly instead of being ignored.
 *
 * Worker STATUS (DETAIL_STATUS may change within a status):
 *
 *   PENDING ─▶ CREATED ─▶ INITIALIZED ─▶ RUNNING ─▶ TERMINATING ─▶ TERMINATED
 *      └──────────┴────────────┴─────────────┴────────────┴──────▶ ERROR
 *
 * Revision status:
 *
 *   pending ─▶ deploying ─▶ active ─▶ superseded ─▶ active (a revert to it, in place)
 *      │           ├──────▶ failed      (a rolling deploy failed; the release may be tried again)
 *      │           └──────▶ ghosted     (its hot upgrade failed: not tried hot again without --retry)
 *      └──▶ failed          active ──▶ failed | ghosted (its probation ended badly; see Probation)
 *
 * Rollout phase:  running ─▶ succeeded | failed
 */
import { MoltError } from '../errors.js';

export type WorkerStatus = 'PENDING' | 'CREATED' | 'INITIALIZED' | 'RUNNING' | 'TERMINATING' | 'TERMINATED' | 'ERROR';
export type DetailStatus = 'IN_FLIGHT' | 'FREE' | 'BUSY' | 'DRAINING' | 'UPGRADING';
export type RevisionStatus = 'pending' | 'deploying' | 'active' | 'superseded' | 'failed' | 'ghosted';
export type RolloutPhase = 'running' | 'succeeded' | 'failed';

/** A status write its table does not allow. */
export class IllegalTransition extends MoltError {
  constructor(machine: string, subject: string, from: string, to: string, allowed: readonly string[]) {
    super(
      'MOLT_ERR_ILLEGAL_TRANSITION',
      `illegal ${machine} transition of ${subject}: ${from} → ${to} (from ${from} only ${allowed.length ? allowed.join(', ') : 'nothing'} may follow); this is a bug in molt, please report it with the server log`,
    );
  }
}

export class StateMachine<S extends string> {
  constructor(
    readonly name: string,
    private readonly next: Record<S, readonly S[]>,
    /** States that may be written again (a detail change within them). */
    private readonly rewritable: readonly S[] = [],
  ) {}

  can(from: S, to: S): boolean {
    return (from === to && this.rewritable.includes(from)) || this.next[from].includes(to);
  }

  /** Throws unless `from → to` is in the table. */
  check(subject: string, from: S, to: S): void {
    if (!this.can(from, to)) throw new IllegalTransition(this.name, subject, from, to, this.next[from]);
  }

  /** Every state, for tests and docs. */
  states(): S[] {
    return Object.keys(this.next) as S[];
  }

  isFinal(state: S): boolean {
    return this.next[state].length === 0;
  }
}

export const workerStatus = new StateMachine<WorkerStatus>(
  'worker status',
  {
    PENDING: ['CREATED', 'TERMINATED', 'ERROR'],
    CREATED: ['INITIALIZED', 'TERMINATING', 'TERMINATED', 'ERROR'],
    INITIALIZED: ['RUNNING', 'TERMINATING', 'TERMINATED', 'ERROR'],
    RUNNING: ['TERMINATING', 'TERMINATED', 'ERROR'],
    TERMINATING: ['TERMINATED', 'ERROR'],
    TERMINATED: [],
    ERROR: [],
  },
  ['PENDING', 'CREATED', 'INITIALIZED', 'RUNNING', 'TERMINATING'],
);

export const revisionStatus = new StateMachine<RevisionStatus>('revision status', {
  pending: ['deploying', 'failed'],
  deploying: ['active', 'failed', 'ghosted'],
  active: ['superseded', 'failed', 'ghosted'],
  superseded: ['active'],
  failed: [],
  ghosted: [],
});

export const rolloutPhase = new StateMachine<RolloutPhase>('rollout phase', {
  running: ['succeeded', 'failed'],
  succeeded: [],
  failed: [],
});
