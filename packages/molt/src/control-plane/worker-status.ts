/**
 * Worker STATUS and DETAIL_STATUS, and the one table of allowed transitions.
 *
 *   PENDING ─▶ CREATED ─▶ INITIALIZED ─▶ RUNNING ─▶ TERMINATING ─▶ TERMINATED
 *      └──────────┴────────────┴─────────────┴────────────┴──────▶ ERROR
 */
export type WorkerStatus = 'PENDING' | 'CREATED' | 'INITIALIZED' | 'RUNNING' | 'TERMINATING' | 'TERMINATED' | 'ERROR';
export type DetailStatus = 'IN_FLIGHT' | 'FREE' | 'BUSY' | 'DRAINING' | 'UPGRADING';

const NEXT: Record<WorkerStatus, WorkerStatus[]> = {
  PENDING: ['CREATED', 'TERMINATED', 'ERROR'],
  CREATED: ['INITIALIZED', 'TERMINATING', 'TERMINATED', 'ERROR'],
  INITIALIZED: ['RUNNING', 'TERMINATING', 'TERMINATED', 'ERROR'],
  RUNNING: ['TERMINATING', 'TERMINATED', 'ERROR'],
  TERMINATING: ['TERMINATED', 'ERROR'],
  TERMINATED: [],
  ERROR: [],
};

export function canTransition(from: WorkerStatus, to: WorkerStatus): boolean {
  return from === to || NEXT[from].includes(to);
}
