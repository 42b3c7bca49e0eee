import { newId } from '../ids.js';
import type { Store } from '../store/store.js';
import type { TimerRow } from '../store/types.js';
import type { EventLog } from './event-log.js';

/** What a timer of one kind does when it is due. */
export type TimerHandler = (timer: TimerRow) => Promise<void>;

/**
 * Timers that survive the control plane: each is a row in the store, written before the wait it
 * stands for, armed again by every control plane that starts (`resume`), and removed once its work
 * has run. So a crashed worker's replacement after its backoff, or a volume roll promised after an
 * update, happens even when the control plane that promised it died in between.
 *
 * One timer per key: setting a key again replaces its due time. A timer removed while its handler
 * runs is not run again; one set again meanwhile is kept (its row's id changed).
 */
export class DurableTimers {
  private readonly handlers = new Map<string, TimerHandler>();
  private readonly armed = new Map<string, { id: string; timer?: NodeJS.Timeout }>();
  private closed = false;
  private started = false;

  constructor(
    private readonly store: Store,
    private readonly events: EventLog,
  ) {}

  /** Says what timers of `kind` do. */
  on(kind: string, handler: TimerHandler): void {
    this.handlers.set(kind, handler);
  }

  /** Whether a timer of that key is set. */
  has(key: string): boolean {
    return this.armed.has(key);
  }

  /** Sets (or moves) the timer `key`: written to the store first, then armed. */
  async set(key: string, kind: string, target: { namespace: string; app: string }, dueAt: Date, payload: Record<string, unknown> = {}): Promise<void> {
    const row: TimerRow = { key, id: newId(), kind, namespace: target.namespace, app: target.app, dueAt: dueAt.toISOString(), payload };
    this.disarm(key);
    this.armed.set(key, { id: row.id });
    await this.store.putTimer(row);
    if (this.started) this.arm(row);
  }

  /** Removes the timer `key`, if set. */
  async clear(key: string): Promise<void> {
    const entry = this.armed.get(key);
    if (!entry) return;
    this.disarm(key);
    await this.store.deleteTimer(key, entry.id);
  }

  /** Arms every timer the store holds (after recovery: what they do expects a recovered control plane). */
  async resume(): Promise<void> {
    this.started = true;
    for (const row of await this.store.listTimers()) {
      if (this.armed.get(row.key)?.timer) continue;
      this.armed.set(row.key, { id: row.id });
      this.arm(row);
    }
  }

  /** Disarms every timer; their rows stay for the next control plane. */
  close(): void {
    this.closed = true;
    for (const key of [...this.armed.keys()]) this.disarm(key);
  }

  private disarm(key: string): void {
    clearTimeout(this.armed.get(key)?.timer);
    this.armed.delete(key);
  }

  private arm(row: TimerRow): void {
    const entry = this.armed.get(row.key);
    if (!entry || entry.id !== row.id || this.closed) return;
    entry.timer = setTimeout(() => void this.fire(row), Math.max(0, Date.parse(row.dueAt) - Date.now()));
    entry.timer.unref();
  }

  private async fire(row: TimerRow): Promise<void> {
    const handler = this.handlers.get(row.kind);
    try {
      if (!handler) throw new Error(`no handler for timers of kind ${row.kind}`);
      await handler(row);
    } catch (err) {
      this.events.internalError(row.namespace, row.app, err);
    }
    // Done, unless it was set again (or the control plane closed) while its work ran.
    if (this.closed || this.armed.get(row.key)?.id !== row.id) return;
    this.armed.delete(row.key);
    await this.store.deleteTimer(row.key, row.id).catch((err) => this.events.internalError(row.namespace, row.app, err));
  }
}
