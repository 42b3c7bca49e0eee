/**
 * Stateful processes, OTP's gen_server in TypeScript. A process has a name, a state kept by the
 * runtime (outside the module that defines it, so it survives a code swap) and handlers that take
 * the state and a message and return the next state and a reply. Messages are handled one at a
 * time, in order. During a hot upgrade the process is suspended: calls wait, in order, and none is
 * lost; `codeChange` turns the old state into the new shape.
 */

/** What a handler returns: the reply for `call` and the next state (unchanged if left out). */
export interface HandlerResult<S, R = unknown> {
  reply?: R;
  state?: S;
}

export type Handler<S> = (state: S, ...args: any[]) => HandlerResult<S> | Promise<HandlerResult<S>>;

/** What a code change is told: the releases it goes between, and which way. */
export interface CodeChange {
  from: string;
  to: string;
  direction: 'up' | 'down';
  /** The plan's `extra` argument for this module, if it gives one. */
  extra?: unknown;
}

export interface ProcessSpec<S, H extends Record<string, Handler<S>>> {
  /** Unique in the app; the state is kept under this name across upgrades. */
  name: string;
  init: () => S | Promise<S>;
  handlers: H;
  /**
   * Runs once when this module changes under a live process. Up (`change.direction === 'up'`): turns
   * the older version's state into this version's shape. Down (a rollback in place): this version is
   * the one being left, and turns its state back into the shape of `change.to`. Never called when
   * this module is the same in both releases.
   */
  codeChange?: (state: any, change: CodeChange) => S | Promise<S>;
  /** How long a call waits (queued, suspended or running) before it fails. Default 5000. */
  callTimeoutMs?: number;
}

type Args<F> = F extends (state: any, ...args: infer A) => any ? A : never;
type Reply<F> = F extends (...args: any[]) => infer R ? (Awaited<R> extends HandlerResult<any, infer T> ? T : never) : never;

/** How a module talks to a process: typed by its handlers. */
export interface ProcessHandle<S, H extends Record<string, Handler<S>>> {
  readonly name: string;
  /** Sends a message and waits for the reply. */
  call<K extends keyof H & string>(handler: K, ...args: Args<H[K]>): Promise<Reply<H[K]>>;
  /** Sends a message without waiting. */
  cast<K extends keyof H & string>(handler: K, ...args: Args<H[K]>): void;
}

interface Message {
  handler: string;
  args: unknown[];
  resolve(reply: unknown): void;
  reject(err: Error): void;
  timer?: ReturnType<typeof setTimeout>;
}

type AnySpec = ProcessSpec<unknown, Record<string, Handler<unknown>>>;

/** One live process. Its spec changes at an upgrade's point of no return; its state survives. */
interface Entry {
  name: string;
  spec: AnySpec;
  state: unknown;
  ready: Promise<void>;
  initialized: boolean;
  queue: Message[];
  busy: boolean;
  suspended: boolean;
  /** Resolves when the message being handled is done (for suspend). */
  idle?: () => void;
}

const entries = new Map<string, Entry>();
/** Specs defined while an upgrade loads new modules: applied only if the upgrade commits. */
let staging: Map<string, AnySpec> | undefined;

function startEntry(spec: AnySpec): Entry {
  const entry: Entry = { name: spec.name, spec, state: undefined, ready: Promise.resolve(), initialized: false, queue: [], busy: false, suspended: false };
  entry.ready = Promise.resolve()
    .then(() => spec.init())
    .then((state) => {
      entry.state = state;
      entry.initialized = true;
      pump(entry);
    });
  entry.ready.catch((err) => {
    for (const m of entry.queue.splice(0)) fail(m, new Error(`process ${spec.name} failed to start: ${err instanceof Error ? err.message : String(err)}`));
  });
  entries.set(spec.name, entry);
  return entry;
}

function fail(m: Message, err: Error): void {
  clearTimeout(m.timer);
  m.reject(err);
}

/** Handles queued messages one at a time, unless suspended. */
function pump(entry: Entry): void {
  if (entry.busy || entry.suspended || !entry.initialized) return;
  const m = entry.queue.shift();
  if (!m) {
    entry.idle?.();
    return;
  }
  entry.busy = true;
  const handler = entry.spec.handlers[m.handler];
  Promise.resolve()
    .then(() => {
      if (!handler) throw new Error(`process ${entry.name} has no handler ${m.handler}`);
      return handler(entry.state, ...m.args);
    })
    .then(
      (result) => {
        if (result && 'state' in result) entry.state = result.state;
        clearTimeout(m.timer);
        m.resolve(result?.reply);
      },
      (err) => fail(m, err instanceof Error ? err : new Error(String(err))),
    )
    .finally(() => {
      entry.busy = false;
      // A suspend waits for the message in progress: tell it this one is done.
      if (entry.suspended) entry.idle?.();
      else pump(entry);
    });
}

function send(name: string, handler: string, args: unknown[]): Promise<unknown> {
  const entry = entries.get(name);
  if (!entry) return Promise.reject(new Error(`no process ${name}`));
  return new Promise((resolve, reject) => {
    const m: Message = { handler, args, resolve, reject };
    const timeoutMs = entry.spec.callTimeoutMs ?? 5000;
    m.timer = setTimeout(() => {
      const i = entry.queue.indexOf(m);
      if (i >= 0) entry.queue.splice(i, 1);
      reject(new Error(`call ${name}.${handler} timed out after ${timeoutMs} ms${entry.suspended ? ' (the process is suspended for an upgrade)' : ''}`));
    }, timeoutMs);
    entry.queue.push(m);
    pump(entry);
  });
}

/**
 * Declares a process. The first definition of a name starts it (`init`); a later definition of the
 * same name — a new version of its module, loaded by a hot upgrade — replaces its handlers when the
 * upgrade commits, and its state goes through `codeChange`.
 *
 * @example
 * ```ts
 * export const counter = defineProcess({
 *   name: 'counter',
 *   init: () => ({ count: 0 }),
 *   handlers: { add: (s, n: number) => ({ state: { count: s.count + n }, reply: s.count + n }) },
 * });
 * await counter.call('add', 1);
 * ```
 */
export function defineProcess<S, H extends Record<string, Handler<S>>>(spec: ProcessSpec<S, H>): ProcessHandle<S, H> {
  if (typeof spec?.name !== 'string' || !spec.name) throw new TypeError('defineProcess needs a name: defineProcess({ name: "counter", init, handlers })');
  const any = spec as unknown as AnySpec;
  if (staging) staging.set(spec.name, any);
  else if (entries.has(spec.name)) throw new Error(`process ${spec.name} is defined twice; give each process its own name`);
  else startEntry(any);
  const name = spec.name;
  return {
    name,
    call: (handler, ...args) => send(name, handler, args) as never,
    cast: (handler, ...args) => void send(name, handler, args).catch(() => {}),
  };
}

/**
 * What the molt runtime uses to upgrade processes in place. Not for apps: the runtime's own copy
 * of this package holds every process, whatever copy an app bundled.
 */
export const processRuntime = {
  /** From now on, definitions are staged instead of started. */
  beginStaging(): void {
    staging = new Map();
  },
  /** Stops staging and returns what was staged. */
  endStaging(): Map<string, AnySpec> {
    const staged = staging ?? new Map();
    staging = undefined;
    return staged;
  },
  /** The live processes' specs, by name (a snapshot, for downgrades). */
  specs(): Map<string, AnySpec> {
    return new Map([...entries].map(([name, e]) => [name, e.spec]));
  },
  names(): string[] {
    return [...entries.keys()];
  },
  has(name: string): boolean {
    return entries.has(name);
  },
  /** A deep copy of a process's state (after its init). */
  async stateCopy(name: string): Promise<unknown> {
    const e = entries.get(name)!;
    await e.ready;
    return structuredClone(e.state);
  },
  /** Stops handling messages once the current one is done; calls wait in order. */
  async suspend(name: string, timeoutMs: number): Promise<void> {
    const e = entries.get(name)!;
    await e.ready;
    e.suspended = true;
    if (!e.busy) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`process ${name} did not finish its current message within ${timeoutMs} ms`)), timeoutMs);
      e.idle = () => {
        clearTimeout(timer);
        e.idle = undefined;
        resolve();
      };
      if (!e.busy) e.idle();
    });
  },
  resume(name: string): void {
    const e = entries.get(name);
    if (!e) return;
    e.suspended = false;
    pump(e);
  },
  /** Point of no return for one process: new handlers, and the new state when there is one. */
  commit(name: string, spec: AnySpec, next?: { state: unknown }): void {
    const e = entries.get(name)!;
    e.spec = spec;
    if (next) e.state = next.state;
  },
  /** Starts a process an upgrade added. */
  start(spec: AnySpec): Promise<void> {
    return startEntry(spec).ready;
  },
  /** Stops a process an upgrade removed; its waiting calls fail. */
  remove(name: string): void {
    const e = entries.get(name);
    if (!e) return;
    entries.delete(name);
    for (const m of e.queue.splice(0)) fail(m, new Error(`process ${name} was removed by an upgrade`));
  },
};
