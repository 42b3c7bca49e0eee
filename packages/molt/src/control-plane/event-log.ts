import { EventEmitter } from 'node:events';
import type { Store } from '../store/store.js';
import type { EventRow, RolloutPhase } from '../store/types.js';

export type NewEvent = Omit<EventRow, 'id' | 'ts' | 'app' | 'rolloutId' | 'workerId' | 'level'> &
  Partial<Pick<EventRow, 'app' | 'rolloutId' | 'workerId' | 'level'>>;

/**
 * The event log the CLI and dashboard follow live: every event is written to the store first
 * (so it survives a restart), then published to subscribers of this process.
 */
export class EventLog {
  private readonly bus = new EventEmitter();

  constructor(private readonly store: Store) {
    this.bus.setMaxListeners(0);
  }

  async append(e: NewEvent): Promise<EventRow> {
    return this.publish(await this.store.appendEvent(toRow(e)));
  }

  /**
   * Ends a rollout and writes its final event in one store transaction, then publishes the event:
   * whoever sees the rollout ended can read that event.
   */
  async finishRollout(rolloutId: string, phase: RolloutPhase, reason: string | null, e: Omit<NewEvent, 'rolloutId'>): Promise<EventRow> {
    return this.publish((await this.store.finishRollout(rolloutId, phase, reason, toRow({ ...e, rolloutId })))!);
  }

  private publish(row: EventRow): EventRow {
    this.bus.emit('event', row);
    return row;
  }

  /**
   * A failure inside molt itself (a store error, an illegal state transition) met in background
   * work: an error event, so it is seen, never an unhandled rejection that ends the server.
   */
  internalError(namespace: string, app: string | null, err: unknown): void {
    void this.append({ namespace, app, level: 'error', type: 'molt.internal-error', message: err instanceof Error ? err.message : String(err) }).catch(() => {});
  }

  /** Calls `fn` for every event appended from now on; returns the unsubscribe function. */
  subscribe(fn: (e: EventRow) => void): () => void {
    this.bus.on('event', fn);
    return () => this.bus.off('event', fn);
  }
}

function toRow(e: NewEvent): Omit<EventRow, 'id'> {
  return {
    ts: new Date().toISOString(),
    namespace: e.namespace,
    app: e.app ?? null,
    rolloutId: e.rolloutId ?? null,
    workerId: e.workerId ?? null,
    level: e.level ?? 'info',
    type: e.type,
    message: e.message,
  };
}
