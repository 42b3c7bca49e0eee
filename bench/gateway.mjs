// Gateway throughput and latency against a direct connection, nginx and a plain Node proxy, all in
// front of the same molt worker, with the same wrk load; then a rolling update under load.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rssMiB, sleep, startMolt, startNginx, startPlainNodeProxy, workerUpstream, wrk, writeBenchApp } from './lib.mjs';

export async function benchGateway({ seconds = 10, rounds = 3 } = {}) {
  const molt = await startMolt();
  const appDir = writeBenchApp('hello world');
  await molt.molt(['app', 'create'], appDir);
  const [worker] = (await molt.api('/api/v1/namespaces/default/apps/bench/workers')).workers;
  // Every proxy reaches the worker as the gateway does: at its Unix socket when it is sandboxed.
  const upstream = workerUpstream(worker, molt.dataDir);
  const nginx = await startNginx(upstream);
  const plain = await startPlainNodeProxy(upstream);
  const auth = { Authorization: `Bearer ${molt.token}` };
  const targets = [
    // wrk speaks TCP only: a sandboxed worker has no port to load directly.
    ...(worker.port ? [['direct to the worker', `http://127.0.0.1:${worker.port}/`, {}]] : []),
    ['nginx (1 worker, keep-alive upstream)', `${nginx.url}/`, {}],
    ['plain node:http proxy (keep-alive agent)', `${plain.url}/`, {}],
    ['molt gateway (auth + routing)', `${molt.url}/api/routes/v1/default/bench/`, auth],
  ];
  const results = new Map(targets.map(([name]) => [name, []]));
  try {
    for (const [, url, headers] of targets) await wrk(url, { seconds: 2, headers }); // warm up
    // Rounds interleave the targets so that machine noise spreads evenly over them.
    for (let r = 0; r < rounds; r++) {
      for (const [name, url, headers] of targets) results.get(name).push(await wrk(url, { seconds, headers }));
    }
    const rssSteady = rssMiB(molt.pid);

    // Updates under load: steady state first, then the same load through a rolling update, then
    // through a hot one (the same kind of change: the app's one module).
    const steady = await wrk(`${molt.url}/api/routes/v1/default/bench/`, { seconds: 5, headers: auth });
    const updates = [];
    for (const [strategy, text] of [['rolling', 'hello again'], ['hot', 'hello once more']]) {
      writeFileSync(join(appDir, 'index.ts'), `export default { fetch: () => new Response(${JSON.stringify(text)}) };\n`);
      const during = wrk(`${molt.url}/api/routes/v1/default/bench/`, { seconds: 8, headers: auth });
      await sleep(1000);
      const t0 = performance.now();
      const update = await molt.molt(['app', 'update', '--strategy', strategy], appDir);
      const ms = performance.now() - t0;
      const load = await during;
      const body = await (await fetch(`${molt.url}/api/routes/v1/default/bench/`, { headers: auth })).text();
      updates.push({ strategy, load, ms, ok: update.code === 0 && body === text });
    }
    return { results, rssSteady, steady, updates, rssAfter: rssMiB(molt.pid) };
  } finally {
    await Promise.all([nginx.stop(), plain.stop()]);
    await molt.stop();
  }
}
