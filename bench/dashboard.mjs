// The dashboard's budget: bundle size, first paint, and frame times under live updates.
import { createServer } from 'node:http';
import { readFileSync, readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { ROOT, sleep, startMolt, writeBenchApp } from './lib.mjs';

const DIST = join(ROOT, 'packages/molt/dist/dashboard');
const CHROMIUM = process.env.MOLT_CHROMIUM ?? '/usr/bin/chromium';
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

/** What the first load fetches (index.html, the script, the stylesheet), gzipped as a server would send it. */
function bundleSize() {
  const files = ['index.html', ...readdirSync(join(DIST, 'assets')).map((f) => join('assets', f))];
  const sizes = files.map((f) => {
    const body = readFileSync(join(DIST, f));
    return { file: f, bytes: body.length, gzip: gzipSync(body, { level: 9 }).length };
  });
  return { files: sizes, gzip: sizes.reduce((n, s) => n + s.gzip, 0), bytes: sizes.reduce((n, s) => n + s.bytes, 0) };
}

const launch = () => chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });

/** First contentful paint of `/` on a real molt server, and the time until a signed-in page shows its apps. */
async function firstPaint(runs) {
  const server = await startMolt();
  try {
    const created = await server.molt(['app', 'create'], writeBenchApp('hello', 1, 'paint'));
    if (created.code !== 0) throw new Error(created.stderr);
    const browser = await launch();
    const paints = [];
    const appsShown = [];
    for (let i = 0; i < runs; i++) {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(server.url);
      await page.getByLabel('Token').waitFor();
      paints.push(await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN));
      await page.getByLabel('Token').fill(server.token);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('tr[data-app="paint"]').waitFor();
      // A signed-in visit: from navigation to the apps table with its row.
      const started = Date.now();
      await page.goto(`${server.url}/#/`);
      await page.reload();
      await page.locator('tr[data-app="paint"]').waitFor();
      appsShown.push(Date.now() - started);
      await context.close();
    }
    await browser.close();
    return { paintMs: median(paints), appsMs: median(appsShown) };
  } finally {
    await server.stop();
  }
}

/**
 * The API of a server with `apps` apps of `perApp` workers each, answered from memory, with every
 * worker reporting on the event stream every few seconds, and figures changing on each reading. This
 * machine cannot run 500 real workers (each is a Node process of ~55 MiB); what is measured is the
 * page's work per update, which is the same whoever answers its requests.
 */
function syntheticApi({ apps, perApp, eventsPerSecond }) {
  const names = Array.from({ length: apps }, (_, i) => `app-${String(i).padStart(3, '0')}`);
  const workers = (app) => Array.from({ length: perApp }, (_, j) => `${app}-worker-${j}`.padEnd(22, 'x').slice(0, 22));
  let id = 0;
  const summary = (name) => ({
    namespace: 'default', name, id: name, currentRevision: 3, permanentRevision: null, probationUntil: null, paused: false, rolloutId: null,
    release: 'a'.repeat(64), spec: { name, workers: perApp, entry: 'index.ts', rollout: { maxSurge: 1, maxUnavailable: 0, drainTimeoutMs: 1000, stopGraceMs: 1000 }, hot: { canaryWindowMs: 1000, permanentAfterMs: 1000 } },
    workers: { running: perApp - (Math.random() < 0.05 ? 1 : 0), total: perApp }, volumes: [], limits: [], isolation: [], route: `/api/routes/v1/default/${name}/`,
    lastRollout: { id: 'r', namespace: 'default', app: name, fromRevision: 2, toRevision: 3, strategy: 'hot', phase: 'succeeded', reason: null, createdAt: new Date().toISOString(), finishedAt: new Date().toISOString() },
    figures: { rps: Math.round(Math.random() * 500), errorsPerSec: Math.random() < 0.1 ? 1 : 0, p50Ms: 1.2, p99Ms: 8.5, at: Date.now() },
  });
  const streams = new Set();
  const timer = setInterval(() => {
    const n = Math.max(1, Math.round(eventsPerSecond / 20));
    let chunk = '';
    for (let k = 0; k < n; k++) {
      const app = names[Math.floor(Math.random() * names.length)];
      const worker = workers(app)[Math.floor(Math.random() * perApp)];
      const e = { id: ++id, ts: new Date().toISOString(), namespace: 'default', app, rolloutId: null, workerId: worker, level: 'info', type: 'worker.running', message: `worker ${worker} is ready and takes traffic` };
      chunk += `id: ${e.id}\nevent: molt\ndata: ${JSON.stringify(e)}\n\n`;
    }
    for (const s of streams) s.write(chunk);
  }, 50);
  const points = () => {
    const now = Date.now();
    return Array.from({ length: 720 }, (_, i) => ({ t: now - (720 - i) * 5000, rps: 200 + Math.random() * 50, errorsPerSec: 0, p50Ms: 1.1, p99Ms: 7, workers: Object.fromEntries(workers('app-000').map((w) => [w, { rssMb: 55 + Math.random(), cpuPercent: Math.random() * 10 }])) }));
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const json = (body) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const p = url.pathname;
    if (p === '/' || p.startsWith('/assets/')) {
      const file = p === '/' ? 'index.html' : p.slice(1);
      const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
      return res.writeHead(200, { 'content-type': types[extname(file)] }).end(readFileSync(join(DIST, file)));
    }
    if (p === '/api/v1/session') return json({ principal: { tokenId: 'bench', namespace: '*', role: 'admin' } });
    if (p === '/api/v1/namespaces') return json({ namespaces: [{ name: 'default', quota: null, usage: {} }] });
    if (p === '/api/v1/namespaces/default/apps') return json({ apps: names.map(summary) });
    if (p === '/api/v1/events/stream') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('retry: 2000\n\n');
      streams.add(res);
      res.on('close', () => streams.delete(res));
      return;
    }
    const appMatch = /^\/api\/v1\/namespaces\/default\/apps\/([^/]+)(\/.*)?$/.exec(p);
    if (appMatch) {
      const [, name, rest = ''] = appMatch;
      if (rest === '') return json({ app: summary(name) });
      if (rest === '/workers') return json({ workers: workers(name).map((w) => ({ id: w, namespace: 'default', app: name, revision: 3, status: 'RUNNING', detailStatus: 'FREE', detail: null, pid: 1, port: null, createdAt: new Date().toISOString(), deletedAt: null, limits: null, isolation: 'sandboxed', release: 'a'.repeat(64) })) });
      if (rest === '/metrics') return json({ intervalMs: 1000, points: url.searchParams.get('since') === '0' ? points() : points().slice(-1) });
      if (rest === '/events') return res.writeHead(200, { 'content-type': 'application/x-ndjson' }).end('');
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"MOLT_ERR_NOT_FOUND","message":"no"}}');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => (clearInterval(timer), server.closeAllConnections(), server.close()) })));
}

/** Frame times of a view for `seconds` while updates stream in: every animation frame's gap. */
async function frames(url, hash, seconds) {
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${url}/${hash}`);
  await page.locator('main h1').waitFor();
  await sleep(1500);
  const gaps = await page.evaluate(
    (ms) =>
      new Promise((resolve) => {
        const out = [];
        let last = performance.now();
        const end = last + ms;
        const tick = (t) => {
          out.push(t - last);
          last = t;
          if (t < end) requestAnimationFrame(tick);
          else resolve(out);
        };
        requestAnimationFrame(tick);
      }),
    seconds * 1000,
  );
  const rows = await page.locator('tbody tr').count();
  await browser.close();
  return { frames: gaps.length, p50: pct(gaps, 50), p99: pct(gaps, 99), max: Math.max(...gaps), over50: gaps.filter((g) => g > 50).length, rows };
}

export async function benchDashboard({ seconds = 10, runs = 5 } = {}) {
  const bundle = bundleSize();
  const paint = await firstPaint(runs);
  const api = await syntheticApi({ apps: 100, perApp: 5, eventsPerSecond: 100 });
  try {
    const list = await frames(api.url, '#/', seconds);
    const app = await frames(api.url, '#/apps/default/app-000', seconds);
    return { bundle, paint, list, app };
  } finally {
    api.close();
  }
}
