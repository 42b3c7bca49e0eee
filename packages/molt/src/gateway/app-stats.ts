/** Upper bounds (ms) of the gateway's latency buckets; a last bucket holds everything slower. */
export const LATENCY_BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];

/** An app's request counts as the gateway answers them: totals since the data plane started. */
export interface AppCounts {
  requests: number;
  /** Answers with status 500 or above, the gateway's own (502, 503, 504) included. */
  serverErrors: number;
  latencySumMs: number;
  /** Answers per latency bucket (not cumulative), `LATENCY_BUCKETS_MS` then one for the rest. */
  buckets: number[];
}

/**
 * What the gateway counts of one app's requests: one call per answered request, a few additions
 * and a scan of 14 bounds, so it costs the request path next to nothing. Rates and percentiles are
 * made from two readings of these totals (see data-plane/metrics.ts).
 */
export class AppStats implements AppCounts {
  requests = 0;
  serverErrors = 0;
  latencySumMs = 0;
  readonly buckets: number[] = new Array(LATENCY_BUCKETS_MS.length + 1).fill(0);

  record(status: number, ms: number): void {
    this.requests++;
    if (status >= 500) this.serverErrors++;
    this.latencySumMs += ms;
    let i = 0;
    while (i < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[i]!) i++;
    this.buckets[i]!++;
  }

  snapshot(): AppCounts {
    return { requests: this.requests, serverErrors: this.serverErrors, latencySumMs: this.latencySumMs, buckets: [...this.buckets] };
  }
}

/**
 * The latency below which a fraction `q` of the answers counted in `buckets` fell, interpolated
 * linearly inside its bucket (as Prometheus' histogram_quantile does); undefined with no answers.
 */
export function quantileMs(buckets: number[], q: number): number | undefined {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return undefined;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!;
    if (seen + n >= rank && n > 0) {
      const lower = i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!;
      // The last bucket has no upper bound: its answers are said to be at its lower one.
      if (i === LATENCY_BUCKETS_MS.length) return lower;
      return lower + ((LATENCY_BUCKETS_MS[i]! - lower) * (rank - seen)) / n;
    }
    seen += n;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1];
}
