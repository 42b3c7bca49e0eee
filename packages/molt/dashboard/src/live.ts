import type { EventRow } from './types.ts';

type Listener = (events: EventRow[]) => void;

/**
 * The server's event stream (`/api/v1/events/stream`, server-sent events), one per page. Events are
 * handed to listeners in batches, once per animation frame, so a burst (a rollout of many workers)
 * costs one render, not one per event. EventSource reconnects by itself with `Last-Event-ID`.
 */
class Live {
  private source?: EventSource;
  private readonly listeners = new Set<Listener>();
  private pending: EventRow[] = [];
  private scheduled = false;
  connected = false;
  private readonly statusListeners = new Set<(up: boolean) => void>();

  start(): void {
    if (this.source) return;
    this.source = new EventSource('/api/v1/events/stream');
    this.source.addEventListener('open', () => this.setStatus(true));
    this.source.addEventListener('error', () => this.setStatus(false));
    this.source.addEventListener('molt', (m) => {
      this.pending.push(JSON.parse((m as MessageEvent<string>).data) as EventRow);
      if (!this.scheduled) {
        this.scheduled = true;
        requestAnimationFrame(() => this.flush());
      }
    });
  }

  stop(): void {
    this.source?.close();
    this.source = undefined;
    this.setStatus(false);
  }

  private setStatus(up: boolean): void {
    this.connected = up;
    for (const fn of this.statusListeners) fn(up);
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    for (const fn of this.listeners) fn(batch);
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn: (up: boolean) => void): () => void {
    this.statusListeners.add(fn);
    return () => this.statusListeners.delete(fn);
  }
}

export const live = new Live();
