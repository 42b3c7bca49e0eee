// The platform surviving itself: requests through a kill -9 of the control plane and through a
// `molt server --takeover` (0 failed each), how long the API takes to answer again and a takeover to
// finish, with the same worker processes before and after.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep, startMolt, wrk, writeBenchApp } from './lib.mjs';

/** The pid of the process titled `title` (as `ps` shows it), or undefined. */
function pidTitled(title) {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0')[0] === title) return Number(e);
    } catch {
      // gone
    }
  }
  return undefined;
}

export async function benchPlatform({ seconds = 10, rounds = 3 } = {}) {
  const molt = await startMolt(['--no-isolation']);
  try {
    const dir = writeBenchApp('hello world', 2);
    await molt.molt(['app', 'create'], dir);
    const route = `${molt.url}/api/routes/v1/default/bench/`;
    const headers = { authorization: `Bearer ${molt.token}` };
    const pids = async () => (await molt.api('/api/v1/namespaces/default/apps/bench/workers')).workers.map((w) => w.pid).join(',');
    const kills = [];
    for (let r = 0; r < rounds; r++) {
      const before = await pids();
      const cp = pidTitled(`molt: control-plane ${molt.dataDir}`);
      const load = wrk(route, { seconds, headers });
      await sleep((seconds * 1000) / 3);
      const killedAt = performance.now();
      process.kill(cp, 'SIGKILL');
      // Sent while it is down: it waits in the data plane's queue until the next control plane answers.
      const health = await fetch(`${molt.url}/api/v1/health`);
      const apiBackMs = performance.now() - killedAt;
      const result = await load;
      kills.push({ ...result, apiBackMs, healthStatus: health.status, samePids: (await pids()) === before, newPid: pidTitled(`molt: control-plane ${molt.dataDir}`) !== cp });
      await sleep(1000);
    }
    const takeovers = [];
    let gateway = molt.pid;
    for (let r = 0; r < rounds; r++) {
      const before = await pids();
      const load = wrk(route, { seconds, headers });
      await sleep((seconds * 1000) / 3);
      const started = performance.now();
      const out = await molt.molt(['server', '--takeover', '--data-dir', molt.dataDir, '--port', '0', '--no-isolation']);
      const takeoverMs = performance.now() - started;
      const result = await load;
      const next = Number(readFileSync(`${molt.dataDir}/server.pid.main`, 'utf8'));
      takeovers.push({ ...result, takeoverMs, ok: out.code === 0 && next !== gateway, samePids: (await pids()) === before });
      // The old one has drained and exited by the next round.
      while (pidAlive(gateway)) await sleep(100);
      gateway = next;
    }
    const steady = await wrk(route, { seconds, headers });
    return { kills, takeovers, steady, gateway };
  } finally {
    await molt.stop();
    const serving = Number(readFileSync(`${molt.dataDir}/server.pid.main`, 'utf8'));
    if (serving !== molt.pid && pidAlive(serving)) {
      process.kill(serving, 'SIGTERM');
      while (pidAlive(serving)) await sleep(100);
    }
  }
}

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Latencies (ms) of API calls made one after another until `until` settles. */
async function apiLatencies(molt, until) {
  const out = [];
  let done = false;
  const end = () => (done = true);
  until.then(end, end);
  while (!done) {
    const t = performance.now();
    await molt.api('/api/v1/namespaces/default/apps');
    out.push(performance.now() - t);
  }
  return out.sort((a, b) => a - b);
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/**
 * Scale: how long a new molt server takes to adopt `workers` workers a stopped one left running
 * (--keep-workers), and the API's latency while `rollouts` rolling updates run at once, against the
 * same calls on the idle server.
 */
export async function benchScale({ workers = 100, rollouts = 20 } = {}) {
  const args = ['--no-isolation', '--keep-workers', '--max-workers-per-app', String(workers)];
  const first = await startMolt(args);
  const dir = writeBenchApp('hello world', workers, 'many');
  const created = await first.molt(['app', 'create'], dir);
  if (created.code !== 0) throw new Error(created.stderr);
  const pidsOf = async (m) => (await m.api('/api/v1/namespaces/default/apps/many/workers')).workers.filter((w) => w.status === 'RUNNING').map((w) => w.pid).sort().join(',');
  const before = await pidsOf(first);
  await first.stop();
  const started = performance.now();
  const molt = await startMolt(args, first.dataDir);
  const listeningMs = performance.now() - started;
  let after = '';
  while ((after = await pidsOf(molt)) !== before && performance.now() - started < 120_000) await sleep(50);
  const adoptMs = performance.now() - started;
  try {
    const apps = [];
    for (let i = 0; i < rollouts; i++) {
      const d = writeBenchApp('v1', 1, `app${i}`);
      const r = await molt.molt(['app', 'create'], d);
      if (r.code !== 0) throw new Error(r.stderr);
      apps.push(d);
    }
    const idle = await apiLatencies(molt, sleep(5000));
    for (const d of apps) writeFileSync(join(d, 'index.ts'), 'export default { fetch: () => new Response("v2") };\n');
    const t = performance.now();
    const all = Promise.all(apps.map((d) => molt.molt(['app', 'update', '--strategy', 'rolling'], d)));
    const busy = await apiLatencies(molt, all);
    const results = await all;
    const rolloutsMs = performance.now() - t;
    return {
      workers,
      samePids: after === before,
      listeningMs,
      adoptMs,
      rollouts,
      failed: results.filter((r) => r.code !== 0).length,
      rolloutsMs,
      idle: { n: idle.length, p50: percentile(idle, 50), p99: percentile(idle, 99) },
      busy: { n: busy.length, p50: percentile(busy, 50), p99: percentile(busy, 99) },
    };
  } finally {
    // Its workers are kept by this stop; a server without --keep-workers adopts them and stops them.
    await molt.stop();
    const last = await startMolt(['--no-isolation', '--max-workers-per-app', String(workers)], molt.dataDir);
    await last.stop();
  }
}
