import { type Metric, Registry } from 'prom-client';
import { LATENCY_BUCKETS_MS } from '../gateway/app-stats.js';
import type { MetricTotals } from './metrics.js';

export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

type Value = { labels: Record<string, string | number>; value: number; metricName?: string };

/**
 * The figures of the dashboard in Prometheus' text format, from the data plane's totals. The
 * gateway counts in its own buckets (gateway/app-stats.ts), so the series are handed to
 * prom-client's registry as collected values, which it names, escapes and formats.
 */
export async function prometheusText(totals: MetricTotals): Promise<string> {
  const registry = new Registry();
  const add = (name: string, help: string, type: 'counter' | 'gauge' | 'histogram', values: Value[]) => {
    const metric = { name, help, type, aggregator: 'sum', get: async () => ({ name, help, type, values, aggregator: 'sum' }) };
    registry.registerMetric(metric as unknown as Metric);
  };
  const app = (a: MetricTotals['apps'][number]) => ({ namespace: a.namespace, app: a.app });
  add('molt_http_requests_total', 'Requests the gateway answered for an app.', 'counter', totals.apps.map((a) => ({ labels: app(a), value: a.counts.requests })));
  add('molt_http_server_errors_total', 'Answers with status 500 or above (the gateway\'s own 502, 503 and 504 included).', 'counter', totals.apps.map((a) => ({ labels: app(a), value: a.counts.serverErrors })));
  const name = 'molt_http_request_duration_seconds';
  add(
    name,
    'Time from a request reaching the gateway to its answer\'s end, waiting for a worker included.',
    'histogram',
    totals.apps.flatMap((a) => {
      let cumulative = 0;
      const buckets = a.counts.buckets.map((n, i) => {
        cumulative += n;
        return { metricName: `${name}_bucket`, labels: { ...app(a), le: i < LATENCY_BUCKETS_MS.length ? LATENCY_BUCKETS_MS[i]! / 1000 : '+Inf' }, value: cumulative };
      });
      return [...buckets, { metricName: `${name}_sum`, labels: app(a), value: a.counts.latencySumMs / 1000 }, { metricName: `${name}_count`, labels: app(a), value: a.counts.requests }];
    }),
  );
  const worker = (w: MetricTotals['workers'][number]) => ({ namespace: w.namespace, app: w.app, worker: w.id });
  add('molt_worker_resident_memory_bytes', 'Resident memory of a worker\'s Node process.', 'gauge', totals.workers.map((w) => ({ labels: worker(w), value: w.rssBytes })));
  add('molt_worker_cpu_seconds_total', 'CPU time (user and system) a worker\'s Node process has used.', 'counter', totals.workers.map((w) => ({ labels: worker(w), value: w.cpuSeconds })));
  return registry.metrics();
}
