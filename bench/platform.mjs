// The platform surviving itself: requests through a kill -9 of the control plane (0 failed), and how
// long the API takes to answer again, with the same worker processes before and after.
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
    const steady = await wrk(route, { seconds, headers });
    return { kills, steady };
  } finally {
    await molt.stop();
  }
}
