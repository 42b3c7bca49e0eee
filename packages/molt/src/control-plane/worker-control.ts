import type { Duplex } from 'node:stream';
import { ControlChannel } from '../runtime/control-channel.js';
import type { ServerToWorker, UpgradeRequest, UpgradeResult, WorkerToServer } from '../runtime/control-messages.js';

/** The longest message a worker may send: its messages are small; anything larger is an attack. */
const MAX_FROM_WORKER = 1024 * 1024;

/**
 * The data plane's end of a worker's control channel (the socket at the worker's fd 3, or a
 * connection to its control socket): messages in,
 * messages out, and upgrades as request and answer. A worker that breaks the protocol is cut off,
 * with the reason given to `onCutOff`.
 */
export class WorkerControl {
  private readonly channel: ControlChannel<WorkerToServer, ServerToWorker>;
  private readonly listeners = new Set<(m: WorkerToServer) => void>();
  private readonly closers = new Set<() => void>();
  private upgrades = 0;

  constructor(socket: Duplex, onCutOff: (reason: string) => void) {
    this.channel = new ControlChannel<WorkerToServer, ServerToWorker>(
      socket,
      (m) => {
        if (!m || typeof m !== 'object' || typeof m.type !== 'string') return;
        for (const fn of [...this.listeners]) fn(m);
      },
      (reason) => {
        for (const fn of [...this.closers]) fn();
        if (reason) onCutOff(reason);
      },
      MAX_FROM_WORKER,
    );
  }

  get open(): boolean {
    return this.channel.open;
  }

  /** Calls `fn` with every message; returns the unsubscribe. */
  onMessage(fn: (m: WorkerToServer) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Calls `fn` once the channel closes (the worker exited, or another data plane took it). */
  onClose(fn: () => void): void {
    if (this.open) this.closers.add(fn);
    else fn();
  }

  send(msg: ServerToWorker): void {
    this.channel.send(msg);
  }

  close(): void {
    this.channel.close();
  }

  /**
   * Asks the worker to upgrade in place and waits for its answer; a worker whose channel closes, or
   * that does not answer within `timeoutMs`, counts as a failed upgrade.
   */
  upgrade(req: Omit<UpgradeRequest, 'type' | 'id'>, timeoutMs: number): Promise<UpgradeResult> {
    if (!this.open) return Promise.resolve({ ok: false, phase: 'load', error: 'the worker is not running' });
    const id = `u${++this.upgrades}`;
    return new Promise((resolvePromise) => {
      const done = (r: UpgradeResult) => {
        clearTimeout(timer);
        unsubscribe();
        this.closers.delete(onClose);
        resolvePromise(r);
      };
      const unsubscribe = this.onMessage((m) => {
        if (m.type === 'upgrade-result' && m.id === id) done(m.result);
      });
      const onClose = () => done({ ok: false, phase: 'load', error: 'the worker exited during the upgrade' });
      this.closers.add(onClose);
      const timer = setTimeout(() => done({ ok: false, phase: 'load', error: `the worker did not finish the upgrade within ${timeoutMs} ms` }), timeoutMs);
      this.send({ type: 'upgrade', id, ...req });
    });
  }
}
