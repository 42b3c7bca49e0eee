import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppStats, LATENCY_BUCKETS_MS, quantileMs } from './app-stats.js';

/** The bucket bounds a latency falls in: (lower, upper], the last one open above. */
function boundsOf(ms: number): [number, number] {
  const i = LATENCY_BUCKETS_MS.findIndex((b) => ms <= b);
  if (i === -1) return [LATENCY_BUCKETS_MS.at(-1)!, Infinity];
  return [i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!, LATENCY_BUCKETS_MS[i]!];
}

describe('the gateway counts of an app, against a plain model (every answer kept)', () => {
  const answers = fc.array(fc.record({ status: fc.constantFrom(200, 204, 301, 404, 500, 502, 503), ms: fc.double({ min: 0, max: 20_000, noNaN: true }) }), { minLength: 1, maxLength: 300 });

  it('counts every answer, and those with status 500 or above', () => {
    fc.assert(
      fc.property(answers, (xs) => {
        const stats = new AppStats();
        for (const a of xs) stats.record(a.status, a.ms);
        expect(stats.requests).toBe(xs.length);
        expect(stats.serverErrors).toBe(xs.filter((a) => a.status >= 500).length);
        expect(stats.buckets.reduce((n, b) => n + b, 0)).toBe(xs.length);
        expect(stats.latencySumMs).toBeCloseTo(xs.reduce((n, a) => n + a.ms, 0), 3);
      }),
    );
  });

  it('gives p50 and p99 inside the bucket of the exact percentile', () => {
    fc.assert(
      fc.property(answers, fc.constantFrom(0.5, 0.9, 0.99), (xs, q) => {
        const stats = new AppStats();
        for (const a of xs) stats.record(a.status, a.ms);
        const sorted = xs.map((a) => a.ms).sort((a, b) => a - b);
        const exact = sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!;
        const [lower, upper] = boundsOf(exact);
        const estimate = quantileMs(stats.buckets, q)!;
        expect(estimate).toBeGreaterThanOrEqual(lower);
        expect(estimate).toBeLessThanOrEqual(upper === Infinity ? lower : upper);
      }),
    );
  });

  it('has no percentile without answers', () => {
    expect(quantileMs(new AppStats().buckets, 0.5)).toBeUndefined();
  });
});
