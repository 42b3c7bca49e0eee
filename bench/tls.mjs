// HTTPS and host-routed throughput: nginx with the same self-signed certificate in front of the same
// molt worker, against the molt gateway over TLS (by path route and by app host) and by app host over
// plain HTTP (the host read from the raw headers, against the path route of the same server).
import { selfSignedCertificate, startMolt, startNginx, workerUpstream, wrk, writeBenchApp } from './lib.mjs';

export async function benchTls({ seconds = 10, rounds = 3 } = {}) {
  const { cert, key } = selfSignedCertificate();
  const tls = await startMolt(['--domain', 'localhost', '--tls-cert', cert, '--tls-key', key]);
  const plain = await startMolt(['--domain', 'localhost']);
  const app = writeBenchApp('hello world');
  // The CLI trusts the test certificate as a user's would after adding it.
  for (const molt of [tls, plain]) await molt.molt(['app', 'create'], app, { NODE_EXTRA_CA_CERTS: cert });
  const [worker] = (await plain.api('/api/v1/namespaces/default/apps/bench/workers')).workers;
  const nginxTls = await startNginx(workerUpstream(worker, plain.dataDir), { cert, key });
  const nginxPlain = await startNginx(workerUpstream(worker, plain.dataDir));
  const port = (url) => new URL(url).port;
  const targets = [
    ['nginx, HTTPS (1 worker, keep-alive upstream)', `${nginxTls.url}/`, {}],
    ['molt gateway, HTTPS, path route', `${tls.url}/api/routes/v1/default/bench/`, { Authorization: `Bearer ${tls.token}` }],
    ['molt gateway, HTTPS, app host', `${tls.url}/`, { Authorization: `Bearer ${tls.token}`, Host: `bench.localhost:${port(tls.url)}` }],
    ['nginx, HTTP', `${nginxPlain.url}/`, {}],
    ['molt gateway, HTTP, path route', `${plain.url}/api/routes/v1/default/bench/`, { Authorization: `Bearer ${plain.token}` }],
    ['molt gateway, HTTP, app host', `${plain.url}/`, { Authorization: `Bearer ${plain.token}`, Host: `bench.localhost:${port(plain.url)}` }],
  ];
  const results = new Map(targets.map(([name]) => [name, []]));
  try {
    for (const [, url, headers] of targets) await wrk(url, { seconds: 2, headers });
    for (let r = 0; r < rounds; r++) for (const [name, url, headers] of targets) results.get(name).push(await wrk(url, { seconds, headers }));
    return results;
  } finally {
    await Promise.all([nginxTls.stop(), nginxPlain.stop()]);
    await tls.stop();
    await plain.stop();
  }
}
