// What the worker sandbox costs: worker start time and requests through the gateway, sandboxed
// (bubblewrap, a user per namespace, a Unix socket) against unsandboxed (`--no-isolation`), on two
// servers in the same run, the same app on each, rounds interleaved.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startMolt, wrk, writeBenchApp } from './lib.mjs';

/** Milliseconds from `worker.created` to `worker.running` of the worker each rollout started. */
async function startTimes(molt, rolloutIds) {
  const out = [];
  for (const id of rolloutIds) {
    const res = await fetch(`${molt.url}/api/v1/namespaces/default/apps/bench/events?rollout=${id}`, { headers: { authorization: `Bearer ${molt.token}` } });
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
    const created = lines.find((e) => e.type === 'worker.created');
    const running = lines.find((e) => e.type === 'worker.running' && e.workerId === created?.workerId);
    if (created && running) out.push(Date.parse(running.ts) - Date.parse(created.ts));
  }
  return out;
}

export async function benchSandbox({ starts = 15, seconds = 10, rounds = 3 } = {}) {
  const servers = [
    ['sandboxed (bubblewrap, uid per namespace, Unix socket)', await startMolt()],
    ['unsandboxed (--no-isolation, loopback port)', await startMolt(['--no-isolation'])],
  ];
  const dirs = new Map();
  const rollouts = new Map(servers.map(([name]) => [name, []]));
  try {
    for (const [name, molt] of servers) {
      const dir = writeBenchApp('hello world');
      dirs.set(name, dir);
      const created = await molt.molt(['app', 'create'], dir);
      if (created.code !== 0) throw new Error(created.stderr);
      const isolation = (await molt.api('/api/v1/namespaces/default/apps/bench')).app.isolation.join('; ');
      if (name.startsWith('sandboxed') !== !isolation.startsWith('NOT ISOLATED')) throw new Error(`${name}: workers say "${isolation}"`);
    }
    // Worker starts: rolling updates (an env change) start one new worker each; servers alternate.
    for (let i = 0; i < starts; i++) {
      for (const [name, molt] of servers) {
        const dir = dirs.get(name);
        const config = JSON.parse(readFileSync(join(dir, 'molt.config.json'), 'utf8'));
        config.env = { ROUND: String(i) };
        writeFileSync(join(dir, 'molt.config.json'), JSON.stringify(config));
        const update = await molt.molt(['app', 'update', '--strategy', 'rolling', '--json'], dir);
        if (update.code !== 0) throw new Error(update.stderr);
        rollouts.get(name).push(JSON.parse(update.stdout).rollout.id);
      }
    }
    const starts_ = new Map();
    for (const [name, molt] of servers) starts_.set(name, await startTimes(molt, rollouts.get(name)));
    // Requests through the gateway.
    const results = new Map(servers.map(([name]) => [name, []]));
    for (const [, molt] of servers) await wrk(`${molt.url}/api/routes/v1/default/bench/`, { seconds: 2, headers: { Authorization: `Bearer ${molt.token}` } });
    for (let r = 0; r < rounds; r++) {
      for (const [name, molt] of servers) results.get(name).push(await wrk(`${molt.url}/api/routes/v1/default/bench/`, { seconds, headers: { Authorization: `Bearer ${molt.token}` } }));
    }
    return { starts: starts_, results };
  } finally {
    for (const [, molt] of servers) await molt.stop();
  }
}
