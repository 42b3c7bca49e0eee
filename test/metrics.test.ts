import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, ServerProcess, simpleApp, tempDir, waitFor } from './helpers.js';

describe("an app's figures: the API's readings and Prometheus' /metrics", () => {
  let metricsPort = 0;
  const server = new ServerProcess(tempDir(), ['--metrics-interval-ms', '300']);
  const call = (path: string) => fetch(server.route('default', 'hello', path), { headers: { authorization: `Bearer ${server.adminToken}` } });
  beforeAll(async () => {
    metricsPort = await freePort();
    server.extraArgs.push('--metrics-listen', `127.0.0.1:${metricsPort}`);
    await server.start();
    const created = await server.molt(['app', 'create'], { cwd: simpleApp(join(tempDir(), 'hello')) });
    expect(created.code, created.stderr).toBe(0);
  });
  afterAll(() => server.stop());

  it('counts what the gateway answered, 5xx apart, with latency, and each worker\'s memory and CPU', async () => {
    for (let i = 0; i < 20; i++) expect((await call('/')).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await call('/unready')).status).toBe(503);
    const slow = await call('/slow?ms=300');
    expect(slow.status).toBe(200);
    // The slow request was the last: once a reading has it (its p99 is at least its 300 ms), every request is in.
    const points = await waitFor(async () => {
      const r = await server.api('GET', '/api/v1/namespaces/default/apps/hello/metrics?since=0');
      const ps = r.body.points as { t: number; rps: number; errorsPerSec: number; p99Ms: number | null; workers: Record<string, { rssMb: number }> }[];
      return ps.some((p) => p.p99Ms !== null && p.p99Ms > 250) ? ps : undefined;
    }, 15_000, 'a reading with the slow request');
    // Rates times the time between readings give back the requests sent.
    const counted = points.reduce((n, p, i) => n + p.rps * (i === 0 ? 0.3 : (p.t - points[i - 1]!.t) / 1000), 0);
    expect(Math.round(counted)).toBe(26);
    expect(points.some((p) => p.errorsPerSec > 0)).toBe(true);
    // In the 250–500 ms bucket (500–1000 ms on a machine slow enough to take 200 ms more for it).
    expect(points.find((p) => p.p99Ms !== null && p.p99Ms > 250)!.p99Ms).toBeLessThanOrEqual(1000);
    const last = points.at(-1)!;
    const workers = Object.values(last.workers);
    expect(workers).toHaveLength(1);
    expect(workers[0]!.rssMb).toBeGreaterThan(10);

    const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.adminToken}` } })).text();
    expect(text).toContain('molt_http_requests_total{namespace="default",app="hello"} 26');
    expect(text).toContain('molt_http_server_errors_total{namespace="default",app="hello"} 5');
    expect(text).toContain('molt_http_request_duration_seconds_count{namespace="default",app="hello"} 26');
    expect(text).toContain('molt_http_request_duration_seconds_bucket{namespace="default",app="hello",le="+Inf"} 26');
    expect(text).toMatch(/molt_worker_cpu_seconds_total\{namespace="default",app="hello",worker="\w+"\} [\d.]+/);
    // The app list carries the last reading.
    const list = await server.api('GET', '/api/v1/namespaces/default/apps');
    expect(list.body.apps[0].figures).toMatchObject({ rps: expect.any(Number), errorsPerSec: expect.any(Number) });
    expect(list.body.apps[0].lastRollout).toMatchObject({ phase: 'succeeded', toRevision: 1 });
  });

  it('serves /metrics to the server admin only on the main port, and to anyone on --metrics-listen', async () => {
    expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
    const deployer = await server.createToken('default', 'deployer');
    const refused = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${deployer}` } });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain("server's admin token");
    const open = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(open.status).toBe(200);
    expect(open.headers.get('content-type')).toContain('text/plain');
    expect(await open.text()).toContain('molt_http_requests_total{namespace="default",app="hello"}');
    expect((await fetch(`http://127.0.0.1:${metricsPort}/api/v1/tokens`)).status).toBe(404);
  });

  it('refuses a --metrics-listen that is not host:port, saying so', async () => {
    const bad = new ServerProcess(tempDir(), ['--metrics-listen', 'nowhere']);
    await expect(bad.start()).rejects.toThrow(/--metrics-listen must be host:port/);
  });
});
