// `npm run bench`: runs every benchmark and prints the tables that docs/benchmarks.md records.
import { cpus } from 'node:os';
import { benchGateway } from './gateway.mjs';
import { benchVolumes } from './volumes.mjs';
import { benchHot } from './hot.mjs';
import { benchSandbox } from './sandbox.mjs';
import { benchPlatform, benchScale } from './platform.mjs';
import { benchBuilds } from './builds.mjs';
import { benchTls } from './tls.mjs';
import { benchDashboard } from './dashboard.mjs';

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

// `npm run bench -- volumes` runs one part; no argument runs all.
const only = new Set(process.argv.slice(2));
const want = (name) => only.size === 0 || only.has(name);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
console.log(`# molt benchmarks — ${new Date().toISOString()}, Node ${process.version}, ${cpus().length} cores`);
console.log(`wrk -t1 -c32 -d${seconds}s --latency, ${rounds} interleaved rounds, medians\n`);

if (want('gateway')) {
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
  console.log('| updates under load (gateway) | requests | errors | req/s | p50 ms | p99 ms |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  const rows = [['steady state (5 s)', g.steady], ...g.updates.map((u) => [`through \`molt app update --strategy ${u.strategy}\` (8 s)`, u.load])];
  for (const [name, r] of rows) {
    console.log(`| ${name} | ${fmt(r.requests)} | ${r.non2xx + r.socketErrors} | ${fmt(r.rps)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} |`);
  }
  for (const u of g.updates) console.log(`\n\`molt app update --strategy ${u.strategy}\` took ${fmt(u.ms)} ms end to end (build, upload, update); new code served: ${u.ok ? 'yes' : 'NO'}`);
}

if (want('platform')) {
  const p = await benchPlatform({ seconds, rounds });
  console.log('| requests through a kill -9 of the control plane (gateway, 2 workers) | requests | failed | req/s | p99 ms | API answers again after | same worker pids |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const [i, k] of p.kills.entries()) {
    console.log(`| round ${i + 1} | ${fmt(k.requests)} | ${k.non2xx + k.socketErrors} | ${fmt(k.rps)} | ${fmt(k.p99, 2)} | ${fmt(k.apiBackMs)} ms (HTTP ${k.healthStatus}) | ${k.samePids && k.newPid ? 'yes' : 'NO'} |`);
  }
  console.log(`| no kill (same server, after) | ${fmt(p.steady.requests)} | ${p.steady.non2xx + p.steady.socketErrors} | ${fmt(p.steady.rps)} | ${fmt(p.steady.p99, 2)} | | |`);
  console.log('\n| requests through `molt server --takeover` (gateway, 2 workers) | requests | failed | req/s | p99 ms | takeover took | same worker pids |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const [i, t] of p.takeovers.entries()) {
    console.log(`| round ${i + 1} | ${fmt(t.requests)} | ${t.non2xx + t.socketErrors} | ${fmt(t.rps)} | ${fmt(t.p99, 2)} | ${fmt(t.takeoverMs)} ms${t.ok ? '' : ' (FAILED)'} | ${t.samePids ? 'yes' : 'NO'} |`);
  }
  console.log('');
}

if (want('scale')) {
  const s = await benchScale({ workers: Number(process.env.BENCH_WORKERS ?? 100), rollouts: Number(process.env.BENCH_ROLLOUTS ?? 20) });
  console.log(`| a new molt server adopts ${s.workers} running workers (left by --keep-workers) | ms |`);
  console.log('| --- | ---: |');
  console.log(`| start → listening (workers adopted, control plane recovered) | ${fmt(s.listeningMs)} |`);
  console.log(`| start → API lists all ${s.workers} RUNNING with the same pids | ${fmt(s.adoptMs)}${s.samePids ? '' : ' (pids CHANGED)'} |`);
  console.log(`\n| API latency, GET /api/v1/namespaces/default/apps one after another | calls | p50 ms | p99 ms |`);
  console.log('| --- | ---: | ---: | ---: |');
  console.log(`| idle server (${s.workers + s.rollouts} workers) | ${fmt(s.idle.n)} | ${fmt(s.idle.p50, 2)} | ${fmt(s.idle.p99, 2)} |`);
  console.log(`| while ${s.rollouts} rolling updates run at once (${fmt(s.rolloutsMs)} ms, ${s.failed} failed) | ${fmt(s.busy.n)} | ${fmt(s.busy.p50, 2)} | ${fmt(s.busy.p99, 2)} |`);
  console.log('');
}

if (want('volumes')) {
  const v = await benchVolumes();
  const mib = (b) => fmt(b / 1024 / 1024, 1);
  console.log(`\n| volume push (${fmt(v.files)} files, ${mib(v.totalBytes)} MiB) | time s | revision | files sent | MiB sent |`);
  console.log('| --- | ---: | --- | ---: | ---: |');
  for (const p of v.pushes) console.log(`| ${p.name} | ${fmt(p.ms / 1000, 2)} | ${p.changed ? p.revision : `none (stays ${p.revision})`} | ${fmt(p.sentFiles)} | ${mib(p.sentBytes)} |`);
  console.log(`\n| materializing that revision for a new worker | time s |`);
  console.log('| --- | ---: |');
  console.log(`| first worker, cold: every blob hashed, hard-linked, dirs made read-only (a server just restarted) | ${fmt(v.materializeMs / 1000, 2)} |`);
  console.log(`| first worker, warm: blobs unchanged since the server stored or checked them (the server that took the push) | ${fmt(v.warmMs / 1000, 2)} |`);
  console.log(`| every later worker (already materialized) | ${fmt(v.reuseMs / 1000, 3)} |`);
  console.log(`| baseline: \`cp -r\` of the same tree | ${fmt(v.copyMs / 1000, 2)} |`);
}

if (want('hot')) {
  const h = await benchHot({ upgrades: Number(process.env.BENCH_UPGRADES ?? 1000) });
  const rolling = h.compare.find((c) => c.strategy === 'rolling').ms;
  console.log('\n| update of a 2-worker app, accepted → every worker serves the new code | median of 7, ms | × faster than rolling |');
  console.log('| --- | ---: | ---: |');
  for (const c of h.compare) {
    const label = c.strategy === 'rolling' ? 'rolling (surge 1: start, ready, drain, stop)' : `hot, canary window ${c.canary} ms`;
    console.log(`| ${label} | ${fmt(c.ms, 1)} | ${fmt(rolling / c.ms, 1)} |`);
  }
  console.log(`\nswap duration per worker over ${h.swaps.count} hot upgrades: p50 ${fmt(h.swaps.p50, 2)} ms, p99 ${fmt(h.swaps.p99, 2)} ms`);
  console.log(`\n| hot upgrades of a 50-module app (budget ${h.budget} retained module versions) | worker RSS MiB | worker |`);
  console.log('| ---: | ---: | --- |');
  for (const r of h.rss) console.log(`| ${fmt(r.upgrades)} | ${fmt(r.rssMiB, 1)} | ${r.worker} |`);
  console.log(`\n${fmt(h.upgrades)} upgrades served by ${h.workersUsed} worker process(es) in turn (recycled when over budget)`);
}

if (want('tls')) {
  const results = await benchTls({ seconds, rounds });
  console.log('\n| target | req/s | × nginx (same scheme) | p50 ms | p99 ms | errors |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  let base = 0;
  for (const [name, runs] of results) {
    const rps = median(runs.map((r) => r.rps));
    if (name.startsWith('nginx')) base = rps;
    const errors = runs.reduce((a, r) => a + r.non2xx + r.socketErrors, 0);
    console.log(`| ${name} | ${fmt(rps)} | ${(rps / base).toFixed(2)} | ${median(runs.map((r) => r.p50)).toFixed(2)} | ${median(runs.map((r) => r.p99)).toFixed(2)} | ${errors} |`);
  }
}

if (want('builds')) {
  const apps = await benchBuilds({ rounds });
  console.log('\n| `molt release build` | release size | cold | unchanged | one module changed | dependency added |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const a of apps) {
    const ms = (step) => `${fmt(median(a.steps[step]))} ms`;
    console.log(`| ${a.label} | ${a.size} MiB | ${ms('cold')} | ${ms('unchanged')} | ${ms('one module changed')} | ${ms('dependency added')} |`);
  }
  for (const a of apps) console.log(`\n${a.label}: ${Object.entries(a.work).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
}

if (want('sandbox')) {
  const s = await benchSandbox({ starts: Number(process.env.BENCH_STARTS ?? 15), seconds, rounds });
  const [sandboxed, plain] = [...s.starts.keys()];
  const p = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))];
  console.log(`\n| worker start, created → ready (${s.starts.get(sandboxed).length} starts each, alternating) | median ms | p90 ms |`);
  console.log('| --- | ---: | ---: |');
  for (const [name, xs] of s.starts) console.log(`| ${name} | ${fmt(median(xs))} | ${fmt(p(xs, 0.9))} |`);
  console.log(`| added by the sandbox | ${fmt(median(s.starts.get(sandboxed)) - median(s.starts.get(plain)))} | |`);
  console.log('\n| requests through the gateway | req/s | p50 ms | p99 ms | errors |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [name, rs] of s.results) {
    const errors = rs.reduce((n, r) => n + r.non2xx + r.socketErrors, 0);
    console.log(`| ${name} | ${fmt(median(rs.map((r) => r.rps)))} | ${fmt(median(rs.map((r) => r.p50)), 2)} | ${fmt(median(rs.map((r) => r.p99)), 2)} | ${errors} |`);
  }
  const ratio = median(s.results.get(sandboxed).map((r) => r.rps)) / median(s.results.get(plain).map((r) => r.rps));
  console.log(`\nsandboxed / unsandboxed req/s: ${fmt(ratio, 3)}`);
}

// `npm run bench -- model`: the model-based hot upgrade test, long (asked for by name only).
if (only.has('model')) {
  const { spawnSync } = await import('node:child_process');
  const runs = process.env.MOLT_MODEL_RUNS ?? '40';
  const steps = process.env.MOLT_MODEL_STEPS ?? '15';
  console.log(`\nmodel-based hot upgrade run: ${runs} runs of up to ${steps} steps`);
  const r = spawnSync('npx', ['vitest', 'run', 'test/model'], { stdio: 'inherit', env: { ...process.env, MOLT_MODEL_RUNS: runs, MOLT_MODEL_STEPS: steps } });
  if (r.status !== 0) process.exitCode = 1;
}

if (want('dashboard')) {
  const d = await benchDashboard({ seconds, runs: 5 });
  console.log('| dashboard budget | measured | budget |');
  console.log('| --- | ---: | ---: |');
  console.log(`| first load, gzipped (${d.bundle.files.map((f) => f.file).join(', ')}) | ${fmt(d.bundle.gzip / 1024, 1)} KiB (${fmt(d.bundle.bytes / 1024, 1)} KiB raw) | 150 KiB |`);
  console.log(`| first contentful paint of / (real server, median of 5) | ${fmt(d.paint.paintMs)} ms | 1,000 ms |`);
  console.log(`| signed-in reload until the apps table shows (median of 5) | ${fmt(d.paint.appsMs)} ms | |`);
  for (const [name, f] of [['apps list, 100 apps × 5 workers, 100 events/s', d.list], ['one app (5 workers, an hour of figures), same stream', d.app]]) {
    console.log(`| frames over ${seconds} s: ${name} (${f.rows} rows) | p50 ${fmt(f.p50, 1)} ms, p99 ${fmt(f.p99, 1)} ms, max ${fmt(f.max, 1)} ms; ${f.over50} of ${f.frames} over 50 ms | 16.7 ms frames |`);
  }
  console.log('');
}
