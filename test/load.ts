import { Agent, request } from 'node:http';

export interface LoadResult {
  requests: number;
  errors: string[];
  statuses: Map<number, number>;
  /** Each distinct body, with the time it was first and last seen. */
  bodies: Map<string, { first: number; last: number; count: number }>;
  latenciesMs: number[];
}

/**
 * A bounded load generator on loopback: `concurrency` keep-alive loops send GETs to `url`
 * until `stop()` resolves or `maxRequests` is reached. Records every status, error and body.
 */
export function runLoad(url: string, opts: { concurrency?: number; headers?: Record<string, string>; maxRequests?: number; maxMs?: number } = {}) {
  const u = new URL(url);
  if (u.hostname !== '127.0.0.1' && u.hostname !== '[::1]' && u.hostname !== 'localhost') throw new Error('load only goes to loopback');
  const agent = new Agent({ keepAlive: true, maxSockets: opts.concurrency ?? 8 });
  const result: LoadResult = { requests: 0, errors: [], statuses: new Map(), bodies: new Map(), latenciesMs: [] };
  let stopped = false;
  const maxRequests = opts.maxRequests ?? 200_000;
  const endAt = Date.now() + (opts.maxMs ?? 60_000);
  const one = () =>
    new Promise<void>((resolvePromise) => {
      const start = performance.now();
      const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, agent, headers: opts.headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => {
          result.latenciesMs.push(performance.now() - start);
          result.statuses.set(res.statusCode!, (result.statuses.get(res.statusCode!) ?? 0) + 1);
          if (res.statusCode! >= 300) result.errors.push(`HTTP ${res.statusCode}: ${body.slice(0, 200)}`);
          const now = Date.now();
          const seen = result.bodies.get(body);
          if (seen) {
            seen.last = now;
            seen.count++;
          } else result.bodies.set(body, { first: now, last: now, count: 1 });
          resolvePromise();
        });
        res.on('error', (err) => {
          result.errors.push(`response error: ${err.message}`);
          resolvePromise();
        });
      });
      req.on('error', (err) => {
        result.errors.push(`request error: ${err.message}`);
        resolvePromise();
      });
      req.end();
    });
  const loops = Array.from({ length: opts.concurrency ?? 8 }, async () => {
    while (!stopped && result.requests < maxRequests && Date.now() < endAt) {
      result.requests++;
      await one();
    }
  });
  const done = Promise.all(loops).then(() => {
    agent.destroy();
    return result;
  });
  return {
    result,
    async stop(): Promise<LoadResult> {
      stopped = true;
      return done;
    },
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
