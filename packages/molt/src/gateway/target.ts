import { UpstreamPool } from './upstream.js';

/** Where the gateway reaches a worker: its socket (sandboxed) or a loopback port. */
export type WorkerAddress = { path: string } | { host: string; port: number };

/**
 * One worker as the gateway sees it.
 *
 *   ready ──▶ draining ──▶ removed
 *
 * A draining target gets no new requests; the ones it has finish, then `drained` resolves.
 */
export type TargetState = 'ready' | 'draining' | 'removed';

export class Target {
  state: TargetState = 'ready';
  outstanding = 0;
  /** Responses with status 500 or above (a hot upgrade's canary is watched with it). */
  serverErrors = 0;
  readonly pool: UpstreamPool;
  private drainWaiters: (() => void)[] = [];

  constructor(
    readonly workerId: string,
    /** Its socket, or a loopback port. */
    readonly address: WorkerAddress,
  ) {
    this.pool = new UpstreamPool(address);
  }

  begin(): void {
    this.outstanding++;
  }

  end(): void {
    this.outstanding--;
    if (this.outstanding === 0 && this.state !== 'ready') this.flushDrainWaiters();
  }

  /** Stops new requests and resolves when the in-flight ones are done (or at once if none). */
  drain(): Promise<void> {
    if (this.state === 'ready') this.state = 'draining';
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((resolvePromise) => this.drainWaiters.push(resolvePromise));
  }

  remove(): void {
    this.state = 'removed';
    this.flushDrainWaiters();
    this.pool.destroy();
  }

  private flushDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
