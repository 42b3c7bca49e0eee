import { Agent } from 'node:http';

/**
 * One worker as the gateway sees it.
 *
 *   ready ──▶ draining ──▶ removed
 *
 * A draining target gets no new requests; the ones it has finish, then `drained` resolves.
 */
export type TargetState = 'ready' | 'draining' | 'removed';

/** Idle upstream sockets close before the worker's 65 s keep-alive timeout (nodejs/node#47130). */
const IDLE_SOCKET_MS = 30_000;

export class Target {
  state: TargetState = 'ready';
  outstanding = 0;
  readonly agent: Agent;
  private drainWaiters: (() => void)[] = [];

  constructor(
    readonly workerId: string,
    readonly host: string,
    readonly port: number,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256, timeout: IDLE_SOCKET_MS, scheduling: 'lifo' });
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
    this.agent.destroy();
  }

  private flushDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
