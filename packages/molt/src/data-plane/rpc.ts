import type { Socket } from 'node:net';
import { ControlChannel } from '../runtime/control-channel.js';

/** The longest message between the data plane and the control plane (a worker's launch, a token list). */
const MAX_MESSAGE = 64 * 1024 * 1024;

type Message =
  | { id: number; method: string; params: unknown }
  | { id: number; result?: unknown; error?: { message: string; code?: string; name?: string } }
  | { event: string; data: unknown };

export type Handler = (params: never) => unknown;

/** An error the other side threw, with its message, molt code and class name kept. */
export class RemoteError extends Error {
  constructor(
    message: string,
    readonly code?: string,
    readonly remoteName?: string,
  ) {
    super(message);
  }
}

/** What a call gets when the peer goes away before answering. */
export class PeerGone extends Error {}

/**
 * One side of the local channel between the data plane and the control plane: JSON lines over a
 * Unix socket, calls answered by id in either direction, and events that expect no answer.
 */
export class RpcPeer {
  private readonly channel: ControlChannel<Message, Message>;
  private readonly calls = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private next = 0;
  private closeListeners: (() => void)[] = [];

  constructor(
    socket: Socket,
    private readonly handlers: Record<string, Handler>,
    private readonly onEvent: (event: string, data: unknown) => void = () => {},
  ) {
    this.channel = new ControlChannel<Message, Message>(socket, (m) => this.receive(m), () => this.closed(), MAX_MESSAGE);
  }

  get open(): boolean {
    return this.channel.open;
  }

  onClose(fn: () => void): void {
    if (!this.open) fn();
    else this.closeListeners.push(fn);
  }

  call<T>(method: string, params: unknown = {}): Promise<T> {
    if (!this.open) return Promise.reject(new PeerGone(`the data plane channel is closed (${method})`));
    const id = ++this.next;
    return new Promise<T>((resolve, reject) => {
      this.calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.channel.send({ id, method, params });
    });
  }

  emit(event: string, data: unknown): void {
    this.channel.send({ event, data });
  }

  close(): void {
    this.channel.close();
  }

  private receive(m: Message): void {
    if ('event' in m) {
      this.onEvent(m.event, m.data);
      return;
    }
    if ('method' in m) {
      void this.answer(m);
      return;
    }
    const call = this.calls.get(m.id);
    if (!call) return;
    this.calls.delete(m.id);
    if (m.error) call.reject(new RemoteError(m.error.message, m.error.code, m.error.name));
    else call.resolve(m.result);
  }

  private async answer(m: { id: number; method: string; params: unknown }): Promise<void> {
    const handler = this.handlers[m.method];
    try {
      if (!handler) throw new Error(`no method ${m.method} on this side of the channel`);
      const result = await (handler as (p: unknown) => unknown)(m.params);
      this.channel.send({ id: m.id, result: result ?? null });
    } catch (err) {
      const e = err as Error & { code?: string };
      this.channel.send({ id: m.id, error: { message: e.message ?? String(err), code: typeof e.code === 'string' ? e.code : undefined, name: e.constructor?.name } });
    }
  }

  private closed(): void {
    for (const call of this.calls.values()) call.reject(new PeerGone('the other side of the data plane channel went away'));
    this.calls.clear();
    for (const fn of this.closeListeners.splice(0)) fn();
  }
}
