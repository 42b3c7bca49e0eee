// Hot upgrades: time from an accepted update to every worker serving the new code, hot against
// rolling for the same change; the swap's own duration per worker over 100 upgrades; and a
// worker's RSS over 1,000 consecutive hot upgrades of a 50-module app, with the recycle that keeps
// it bounded. Releases are written and uploaded as `molt` does, through the same API.
import { linkSync, mkdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { getFromWorker, ROOT, rssMiB, sleep, startMolt, tmp, workerUpstream } from './lib.mjs';

const dist = (p) => import(join(ROOT, 'packages/molt/dist', p));
const LEAVES = 49;
/** Updates of each kind in the comparison; the median is reported. */
const ROUNDS = 7;

/** A release of a 50-module app: index.js imports 49 leaves; `version` changes index.js and one leaf. */
function writeRelease(root, version, base, app = 'hotbench') {
  const dir = join(root, `${app}-r${version}`);
  mkdirSync(dir, { recursive: true });
  const sha = (s) => createHash('sha256').update(s).digest('hex');
  const changed = version % LEAVES;
  const modules = [];
  for (let i = 0; i < LEAVES; i++) {
    const code = `export const v${i} = ${i === changed ? version : 0};\n`;
    if (base && i !== changed) linkSync(join(base, `m${i}.js`), join(dir, `m${i}.js`));
    else writeFileSync(join(dir, `m${i}.js`), code);
    modules.push({ path: `m${i}.js`, hash: sha(base && i !== changed ? `export const v${i} = 0;\n` : code), imports: [], processes: [], codeChange: false, configChange: false });
  }
  const index = `${Array.from({ length: LEAVES }, (_, i) => `import { v${i} } from './m${i}.js';`).join('\n')}
const sum = ${Array.from({ length: LEAVES }, (_, i) => `v${i}`).join(' + ')};
export default { fetch: () => new Response('version ${version} ' + sum) };
`;
  writeFileSync(join(dir, 'index.js'), index);
  modules.push({ path: 'index.js', hash: sha(index), imports: Array.from({ length: LEAVES }, (_, i) => `m${i}.js`), processes: [], codeChange: false, configChange: false });
  modules.sort((a, b) => (a.path < b.path ? -1 : 1));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
  // The app the release is for, as `molt release build` names it: the server materializes it for that app on upload.
  writeFileSync(join(dir, 'molt-release.json'), JSON.stringify({ app, version: String(version), node: process.versions.node, dependencyHash: 'none', configHash: 'bench', entry: 'index.js', modules }));
  return dir;
}

async function uploader(molt) {
  const { Client } = await dist('cli/client.js');
  const { planUpload, uploadArchive } = await dist('cli/upload.js');
  const { scanTree } = await dist('blobs/tree.js');
  const client = new Client(molt.url, molt.token);
  return {
    client,
    async push(dir) {
      const scanned = await scanTree(dir);
      const plan = await planUpload(client, '/api/v1/namespaces/default/blobs/missing', scanned);
      return (await client.upload('/api/v1/namespaces/default/releases', uploadArchive(dir, scanned, plan))).release.id;
    },
  };
}

async function waitRollout(client, app) {
  for (;;) {
    const { app: a } = await client.request('GET', `/api/v1/namespaces/default/apps/${app}`);
    if (!a.rolloutId) return a;
    await sleep(5);
  }
}

/** Every worker (asked directly, at its socket or port) serves `text`. */
async function allServe(client, app, text, dataDir) {
  const { workers } = await client.request('GET', `/api/v1/namespaces/default/apps/${app}/workers`);
  const running = workers.filter((w) => w.status === 'RUNNING');
  const bodies = await Promise.all(running.map((w) => getFromWorker(workerUpstream(w, dataDir))));
  return bodies.length > 0 && bodies.every((b) => b?.startsWith(text));
}

export async function benchHot({ upgrades = 1000, swaps = 100 } = {}) {
  const molt = await startMolt();
  const root = tmp('molt-bench-hot-');
  try {
    const { client, push } = await uploader(molt);
    const base = writeRelease(root, 0);
    const first = await push(base);
    const config = (name, workers, hot) => ({ name, entry: 'index.js', workers, readiness: { path: '/' }, rollout: { drainTimeoutMs: 2000 }, hot });

    // 1. Hot against rolling: the same change, from the accepted update to every worker serving it.
    const compare = [];
    let version = 1;
    for (const [name, strategy, canary] of [['cmp-rolling', 'rolling', 0], ['cmp-hot', 'hot', 0], ['cmp-hot-canary', 'hot', 1000]]) {
      const initial = await push(writeRelease(root, 0, base, name));
      await client.request('POST', '/api/v1/namespaces/default/apps', { config: config(name, 2, { canaryWindowMs: canary }), releaseId: initial });
      await waitRollout(client, name);
      const times = [];
      for (let round = 0; round < ROUNDS; round++) {
        const v = version++;
        const id = await push(writeRelease(root, v, base, name));
        const t0 = performance.now();
        await client.request('POST', `/api/v1/namespaces/default/apps/${name}/update`, { config: config(name, 2, { canaryWindowMs: canary }), releaseId: id, strategy });
        while (!(await allServe(client, name, `version ${v} `, molt.dataDir))) await sleep(2);
        times.push(performance.now() - t0);
        await waitRollout(client, name);
      }
      compare.push({ name, strategy, canary, ms: times.sort((a, b) => a - b)[Math.floor(ROUNDS / 2)] });
    }

    // 2 and 3. One worker, 1,000 hot upgrades in a row; swap durations, RSS and recycles.
    const budget = 600;
    await client.request('POST', '/api/v1/namespaces/default/apps', { config: config('hotbench', 1, { canaryWindowMs: 0, maxRetainedModules: budget }), releaseId: first });
    await waitRollout(client, 'hotbench');
    const rss = [];
    const swapMs = [];
    const pids = new Set();
    let lastEvent = 0;
    for (let i = 1; i <= upgrades; i++) {
      const v = version++;
      const id = await push(writeRelease(root, v, base));
      await client.request('POST', '/api/v1/namespaces/default/apps/hotbench/update', { config: config('hotbench', 1, { canaryWindowMs: 0, maxRetainedModules: budget }), releaseId: id, strategy: 'hot' });
      await waitRollout(client, 'hotbench');
      if (i <= swaps || i % 50 === 0) {
        const events = [];
        await client.stream(`/api/v1/namespaces/default/apps/hotbench/events?after=${lastEvent}`, (e) => events.push(e)).catch(() => {});
        for (const e of events) {
          lastEvent = Math.max(lastEvent, e.id);
          const m = /\(swap ([\d.]+) ms\)/.exec(e.message);
          if (m && swapMs.length < swaps) swapMs.push(Number(m[1]));
        }
      }
      if (i % 50 === 0) {
        await sleep(300); // a recycle in progress finishes
        const { workers } = await client.request('GET', '/api/v1/namespaces/default/apps/hotbench/workers');
        const w = workers.find((x) => x.status === 'RUNNING');
        pids.add(w.pid);
        rss.push({ upgrades: i, rssMiB: rssMiB(w.pid), worker: w.id });
      }
    }
    const sorted = [...swapMs].sort((a, b) => a - b);
    const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
    return { compare, swaps: { count: sorted.length, p50: pct(50), p99: pct(99) }, rss, budget, workersUsed: pids.size, upgrades };
  } finally {
    await molt.stop();
  }
}
