import { MoltError } from '../errors.js';
import { AppStats } from './app-stats.js';
import { Target, type WorkerAddress } from './target.js';

export interface QueueLimits {
  /** Requests that may wait for a ready worker per app; past it, 503. */
  maxQueue: number;
  /** How long a request waits for a ready worker before 503. */
  queueTimeoutMs: number;
}

interface Waiter {
  resolve(t: Target): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** The gateway's view of one app: whether it is public or paused, its targets, its waiting requests. */
export class AppRoutes {
  targets: Target[] = [];
  /** What the gateway answered for the app, for its figures. */
  readonly stats = new AppStats();
  public = false;
  /** Hostnames the app claimed (its config's `domains`). */
  domains: string[] = [];
  paused = false;
  private waiters: Waiter[] = [];
  private rr = 0;

  constructor(
    readonly namespace: string,
    readonly name: string,
    private readonly limits: QueueLimits,
    /** Asks why no worker will come when none is ready (the control plane knows); undefined: one may. */
    private readonly noneComing: () => Promise<string | undefined> | undefined = () => undefined,
  ) {}

  /** The ready target with the fewest outstanding requests; ties rotate. */
  pickReady(): Target | undefined {
    const targets = this.targets;
    const n = targets.length;
    let best: Target | undefined;
    const start = this.rr++ % (n || 1);
    for (let i = 0; i < n; i++) {
      const t = targets[(start + i) % n]!;
      if (t.state === 'ready' && (!best || t.outstanding < best.outstanding)) best = t;
    }
    return best;
  }

  /** A ready target now, or after waiting in the bounded queue; 503 when full or timed out. */
  acquire(): Target | Promise<Target> {
    const t = this.pickReady();
    if (t) return t;
    if (this.paused) throw this.pausedError();
    const none = this.noneComing();
    if (!none) return this.enqueue();
    return none.then((why) => {
      if (why) throw new MoltError('MOLT_ERR_NO_WORKER', why);
      return this.pickReady() ?? this.enqueue();
    });
  }

  private pausedError(): MoltError {
    return new MoltError('MOLT_ERR_NO_WORKER', `app ${this.namespace}/${this.name} is paused; run \`molt app resume --app ${this.name}\``);
  }

  /** Waits in the bounded queue for a ready target; 503 when it is full or the wait times out. */
  private enqueue(): Promise<Target> {
    // Paused while the control plane was asked.
    if (this.paused) return Promise.reject(this.pausedError());
    if (this.waiters.length >= this.limits.maxQueue) {
      return Promise.reject(new MoltError('MOLT_ERR_NO_WORKER', `no worker of ${this.namespace}/${this.name} is ready and the wait queue is full (${this.limits.maxQueue}); retry later`));
    }
    return new Promise<Target>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new MoltError('MOLT_ERR_NO_WORKER', `no worker of ${this.namespace}/${this.name} became ready within ${this.limits.queueTimeoutMs} ms; check \`molt worker list\``));
        }, this.limits.queueTimeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  add(target: Target): void {
    this.targets.push(target);
    this.flushWaiters();
  }

  removeTarget(target: Target): void {
    this.targets = this.targets.filter((t) => t !== target);
    target.remove();
  }

  /** Fails every waiting request, e.g. when the app is paused or deleted. */
  rejectWaiters(err: MoltError): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  private flushWaiters(): void {
    while (this.waiters.length > 0) {
      const t = this.pickReady();
      if (!t) return;
      const w = this.waiters.shift()!;
      clearTimeout(w.timer);
      // Count it now so the next waiter sees the load and spreads over the targets.
      w.resolve(t);
    }
  }
}

/** Every app the gateway routes, by `namespace/name`. */
export class RouteTable {
  private readonly apps = new Map<string, AppRoutes>();
  private readonly byWorker = new Map<string, { routes: AppRoutes; target: Target }>();
  private readonly domains = new Map<string, AppRoutes>();

  /** Why no worker of an app will come (the control plane says); undefined while one is on its way. */
  explainNoWorker: (namespace: string, name: string) => Promise<string | undefined> | undefined = () => undefined;

  constructor(private readonly limits: QueueLimits) {}

  app(namespace: string, name: string): AppRoutes | undefined {
    return this.apps.get(`${namespace}/${name}`);
  }

  ensureApp(namespace: string, name: string): AppRoutes {
    const key = `${namespace}/${name}`;
    let routes = this.apps.get(key);
    if (!routes) {
      routes = new AppRoutes(namespace, name, this.limits, () => this.explainNoWorker(namespace, name));
      this.apps.set(key, routes);
    }
    return routes;
  }

  /** Whether any app claimed a hostname (the gateway reads Host only then, or with --domain). */
  hasDomains(): boolean {
    return this.domains.size > 0;
  }

  /** The app that claimed `host`. */
  byDomain(host: string): AppRoutes | undefined {
    return this.domains.get(host);
  }

  /** Routes exactly `domains` to the app (the store made them unique). */
  setDomains(routes: AppRoutes, domains: string[]): void {
    for (const d of routes.domains) if (this.domains.get(d) === routes) this.domains.delete(d);
    routes.domains = domains;
    for (const d of domains) this.domains.set(d, routes);
  }

  /** Every app routed. */
  list(): AppRoutes[] {
    return [...this.apps.values()];
  }

  deleteApp(namespace: string, name: string): void {
    const routes = this.apps.get(`${namespace}/${name}`);
    if (!routes) return;
    routes.rejectWaiters(new MoltError('MOLT_ERR_APP_NOT_FOUND', `app ${namespace}/${name} was deleted`));
    for (const t of routes.targets) this.removeWorker(t.workerId);
    this.setDomains(routes, []);
    this.apps.delete(`${namespace}/${name}`);
  }

  /** Starts sending the app's requests to a worker that passed readiness. */
  addWorker(namespace: string, name: string, workerId: string, address: WorkerAddress): Target {
    const routes = this.ensureApp(namespace, name);
    const target = new Target(workerId, address);
    routes.add(target);
    this.byWorker.set(workerId, { routes, target });
    return target;
  }

  target(workerId: string): Target | undefined {
    return this.byWorker.get(workerId)?.target;
  }

  /** Sends a worker nothing new; resolves when its in-flight requests are done. */
  drainWorker(workerId: string): Promise<void> {
    return this.byWorker.get(workerId)?.target.drain() ?? Promise.resolve();
  }

  removeWorker(workerId: string): void {
    const entry = this.byWorker.get(workerId);
    if (!entry) return;
    this.byWorker.delete(workerId);
    entry.routes.removeTarget(entry.target);
  }
}
