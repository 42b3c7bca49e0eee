// `npm run bench`: runs every benchmark and prints the tables that docs/benchmarks.md records.
import { cpus } from 'node:os';
import { benchGateway } from './gateway.mjs';

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
console.log(`# molt benchmarks — ${new Date().toISOString()}, Node ${process.version}, ${cpus().length} cores`);
console.log(`wrk -t1 -c32 -d${seconds}s --latency, ${rounds} interleaved rounds, medians\n`);

const g = await benchGateway({ seconds, rounds });
const nginx = median(g.results.get('nginx (1 worker, keep-alive upstream)').map((r) => r.rps));
console.log('| target | req/s | × nginx | p50 ms | p99 ms | errors |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const [name, rs] of g.results) {
  const rps = median(rs.map((r) => r.rps));
  const errors = rs.reduce((n, r) => n + r.non2xx + r.socketErrors, 0);
  console.log(`| ${name} | ${fmt(rps)} | ${fmt(rps / nginx, 2)} | ${fmt(median(rs.map((r) => r.p50)), 2)} | ${fmt(median(rs.map((r) => r.p99)), 2)} | ${errors} |`);
}
console.log(`\nmolt server RSS under load: ${fmt(g.rssSteady, 1)} MiB (after the update: ${fmt(g.rssAfter, 1)} MiB)\n`);
console.log('| rolling update under load (gateway) | requests | errors | req/s | p50 ms | p99 ms |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const [name, r] of [['steady state (5 s)', g.steady], ['through `molt app update` (8 s)', g.load]]) {
  console.log(`| ${name} | ${fmt(r.requests)} | ${r.non2xx + r.socketErrors} | ${fmt(r.rps)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} |`);
}
console.log(`\n\`molt app update\` took ${fmt(g.updateMs)} ms end to end (build, upload, rollout); new code served: ${g.updateOk ? 'yes' : 'NO'}`);
