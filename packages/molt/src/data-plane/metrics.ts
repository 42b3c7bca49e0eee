import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { MoltError } from '../errors.js';
import { PROMETHEUS_CONTENT_TYPE, prometheusText } from './prometheus.js';
import { type AppCounts, quantileMs } from '../gateway/app-stats.js';
import type { AppRoutes } from '../gateway/route-table.js';

/** One reading of an app: what happened since the reading before it. */
export interface MetricPoint {
  /** When it was taken (ms since the epoch). */
  t: number;
  /** Requests answered per second, and those with status ≥ 500. */
  rps: number;
  errorsPerSec: number;
  /** Latency of the answers since the last reading (ms); null when there were none. */
  p50Ms: number | null;
  p99Ms: number | null;
  /** Each worker of the app: resident memory (MiB) and CPU (percent of one core). */
  workers: Record<string, { rssMb: number; cpuPercent: number }>;
}

/** A worker as the sampler reads it: its app and its Node process. */
export interface SampledWorker {
  id: string;
  namespace: string;
  app: string;
  pid: number | undefined;
}

/** Totals since the data plane started, for Prometheus (`/metrics`). */
export interface MetricTotals {
  apps: { namespace: string; app: string; counts: AppCounts }[];
  workers: { id: string; namespace: string; app: string; rssBytes: number; cpuSeconds: number }[];
}

/** Linux's clock ticks per second (USER_HZ), the unit of utime and stime in /proc/<pid>/stat. */
const CLOCK_TICKS = 100;
const PAGE_BYTES = 4096;

/** A process's CPU time (s) and resident memory (bytes) from /proc; undefined once it is gone. */
async function usageOf(pid: number): Promise<{ cpuSeconds: number; rssBytes: number } | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS, rssBytes: Number(fields[21]) * PAGE_BYTES };
  } catch {
    return undefined;
  }
}

/**
 * The figures the dashboard draws: every `intervalMs` the data plane reads each app's request
 * counts (kept by the gateway, see gateway/app-stats.ts) and each worker's CPU and memory, and keeps
 * the last `keepMs` of readings per app. They live in the data plane, so a control-plane restart
 * loses none; a restart of the whole server starts them afresh.
 */
export class Metrics {
  private readonly series = new Map<string, MetricPoint[]>();
  private readonly lastCounts = new Map<string, AppCounts>();
  private readonly lastCpu = new Map<string, { cpuSeconds: number; at: number }>();
  private readonly usage = new Map<string, { rssBytes: number; cpuSeconds: number }>();
  private timer?: NodeJS.Timeout;
  private lastAt = Date.now();

  constructor(
    private readonly apps: () => AppRoutes[],
    private readonly workers: () => SampledWorker[],
    readonly intervalMs = 5000,
    private readonly keepMs = 60 * 60 * 1000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sample().catch(() => {}), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Takes one reading of every app and worker now. */
  async sample(now = Date.now()): Promise<void> {
    const seconds = Math.max((now - this.lastAt) / 1000, 0.001);
    this.lastAt = now;
    const workers = this.workers();
    const usages = await Promise.all(workers.map((w) => (w.pid ? usageOf(w.pid) : undefined)));
    const byApp = new Map<string, MetricPoint['workers']>();
    const seen = new Set<string>();
    workers.forEach((w, i) => {
      const u = usages[i];
      if (!u) return;
      seen.add(w.id);
      const before = this.lastCpu.get(w.id);
      const cpuPercent = before ? Math.max(0, ((u.cpuSeconds - before.cpuSeconds) / Math.max((now - before.at) / 1000, 0.001)) * 100) : 0;
      this.lastCpu.set(w.id, { cpuSeconds: u.cpuSeconds, at: now });
      this.usage.set(w.id, u);
      const key = `${w.namespace}/${w.app}`;
      const mine = byApp.get(key) ?? {};
      mine[w.id] = { rssMb: Math.round((u.rssBytes / 1024 / 1024) * 10) / 10, cpuPercent: Math.round(cpuPercent * 10) / 10 };
      byApp.set(key, mine);
    });
    for (const id of this.lastCpu.keys()) if (!seen.has(id)) (this.lastCpu.delete(id), this.usage.delete(id));
    const live = new Set<string>();
    for (const routes of this.apps()) {
      const key = `${routes.namespace}/${routes.name}`;
      live.add(key);
      const counts = routes.stats.snapshot();
      const before = this.lastCounts.get(key) ?? { requests: 0, serverErrors: 0, latencySumMs: 0, buckets: counts.buckets.map(() => 0) };
      this.lastCounts.set(key, counts);
      const delta = counts.buckets.map((n, i) => n - before.buckets[i]!);
      const p50 = quantileMs(delta, 0.5);
      const p99 = quantileMs(delta, 0.99);
      const point: MetricPoint = {
        t: now,
        rps: round((counts.requests - before.requests) / seconds),
        errorsPerSec: round((counts.serverErrors - before.serverErrors) / seconds),
        p50Ms: p50 === undefined ? null : round(p50),
        p99Ms: p99 === undefined ? null : round(p99),
        workers: byApp.get(key) ?? {},
      };
      const points = this.series.get(key) ?? [];
      points.push(point);
      while (points.length > 0 && points[0]!.t < now - this.keepMs) points.shift();
      this.series.set(key, points);
    }
    // A deleted app's readings go with it.
    for (const key of this.series.keys()) if (!live.has(key)) (this.series.delete(key), this.lastCounts.delete(key));
  }

  /** The last reading of each app of a namespace, by app name. */
  latestOf(namespace: string): Record<string, MetricPoint> {
    const out: Record<string, MetricPoint> = {};
    for (const [key, points] of this.series) {
      const [ns, app] = key.split('/') as [string, string];
      const last = points.at(-1);
      if (ns === namespace && last) out[app] = last;
    }
    return out;
  }

  /** An app's readings after `since` (ms since the epoch), oldest first. */
  pointsOf(namespace: string, app: string, since = 0): MetricPoint[] {
    return (this.series.get(`${namespace}/${app}`) ?? []).filter((p) => p.t > since);
  }

  totals(): MetricTotals {
    return {
      apps: this.apps().map((r) => ({ namespace: r.namespace, app: r.name, counts: r.stats.snapshot() })),
      workers: this.workers().flatMap((w) => {
        const u = this.usage.get(w.id);
        return u ? [{ id: w.id, namespace: w.namespace, app: w.app, ...u }] : [];
      }),
    };
  }
}

const round = (n: number) => Math.round(n * 100) / 100;

/** `host:port` (an IPv6 host in brackets); a clear error otherwise. */
export function parseListen(address: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address);
  if (!m || Number(m[3]) > 65535) throw new MoltError('MOLT_ERR_BAD_REQUEST', `--metrics-listen must be host:port (e.g. 127.0.0.1:9464), not ${JSON.stringify(address)}`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

/**
 * `--metrics-listen host:port`: `/metrics` for Prometheus with no token, on an address of its own
 * (a private interface, or loopback for a local agent). Served by the data plane, so a scrape works
 * while the control plane restarts.
 */
export async function listenMetrics(address: string, totals: () => MetricTotals): Promise<Server> {
  const { host, port } = parseListen(address);
  const server = createServer((req, res) => {
    if (req.url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics is served here\n');
      return;
    }
    prometheusText(totals()).then(
      (text) => res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'x-content-type-options': 'nosniff' }).end(req.method === 'HEAD' ? undefined : text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new MoltError('MOLT_ERR_BAD_REQUEST', `--metrics-listen ${address}: ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
  return server;
}
