// The platform surviving itself: requests through a kill -9 of the control plane and through a
// `molt server --takeover` (0 failed each), how long the API takes to answer again and a takeover to
// finish, with the same worker processes before and after.
import { readdirSync, readFileSync } from 'node:fs';
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
