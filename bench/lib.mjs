// Shared pieces of the benchmarks: a molt server child process, wrk runs, nginx and a plain Node proxy.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { request } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const MOLT = join(ROOT, 'packages/molt/bin/molt.js');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const tmp = (p = 'molt-bench-') => mkdtempSync(join(tmpdir(), p));

export function run(cmd, args, opts = {}) {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { maxBuffer: 64 << 20, ...opts }, (err, stdout, stderr) => {
      if (err && !opts.allowFail) reject(new Error(`${cmd} ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolvePromise({ stdout, stderr, code: err ? err.code : 0 });
    });
  });
}

export async function startMolt(extraArgs = [], dataDir = tmp()) {
  const child = spawn(process.execPath, [...(process.env.MOLT_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.MOLT_BENCH_PROFILE}`] : []), MOLT, 'server', '--data-dir', dataDir, '--port', '0', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  while (!/listening on (https?:\/\/\S+)/.test(out)) {
    if (child.exitCode !== null) throw new Error(out);
    await sleep(50);
  }
  const url = /listening on (https?:\/\/\S+)/.exec(out)[1];
  const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  const env = { ...process.env, MOLT_SERVER: url, MOLT_TOKEN: token, MOLT_CONFIG_DIR: join(dataDir, 'cli'), MOLT_CACHE_DIR: join(dataDir, 'cache') };
  return {
    url,
    dataDir,
    token,
    pid: child.pid,
    molt: (args, cwd, extraEnv = {}) => run(process.execPath, [MOLT, ...args], { cwd, env: { ...env, ...extraEnv } }),
    async api(path) {
      const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      return res.json();
    },
    // Already gone when a takeover replaced it.
    stop: () => new Promise((r) => { if (child.exitCode !== null || child.signalCode !== null) return r(); child.once('exit', r); child.kill('SIGTERM'); }),
  };
}

/** A hello-world app, the same one every target serves. */
export function writeBenchApp(body = 'hello world', workers = 1, name = 'bench') {
  const dir = join(tmp('molt-bench-app-'), name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'molt.config.json'), JSON.stringify({ name, entry: 'index.ts', workers, readiness: { path: '/' }, rollout: { drainTimeoutMs: 5000 } }));
  writeFileSync(join(dir, 'index.ts'), `export default { fetch: () => new Response(${JSON.stringify(body)}) };\n`);
  return dir;
}

/** RSS of a process in MiB, from /proc. */
export function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function toMs(v) {
  const m = /([\d.]+)(us|ms|s)/.exec(v);
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

/** Runs wrk (loopback only) and parses req/s, p50, p99 and errors. */
export async function wrk(url, { seconds = 10, connections = 32, threads = 1, headers = {} } = {}) {
  if (!/^https?:\/\/(127\.0\.0\.1|\[::1\]|localhost)[:/]/.test(url)) throw new Error('benchmarks only load loopback');
  const args = [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const { stdout } = await run('wrk', args);
  const num = (re) => Number((re.exec(stdout) ?? [])[1] ?? 0);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    requests: num(/(\d+) requests in/),
    p50: toMs((/^\s*50(?:\.000)?%\s+(\S+)/m.exec(stdout) ?? [])[1] ?? ''),
    p99: toMs((/^\s*99(?:\.000)?%\s+(\S+)/m.exec(stdout) ?? [])[1] ?? ''),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    socketErrors: (/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout) ?? [0, 0, 0, 0, 0]).slice(1).reduce((a, b) => a + Number(b), 0),
    raw: stdout,
  };
}

/**
 * Where a molt worker listens, for the baselines to reach it as the gateway does: its loopback port
 * (unsandboxed) or its Unix socket in the data dir (sandboxed).
 */
export function workerUpstream(worker, dataDir) {
  return worker.port ? { port: worker.port } : { path: join(dataDir, 'run', worker.id, 'http.sock') };
}

/** One GET straight to a worker (at its socket or port): the body, or undefined when it does not answer. */
export function getFromWorker(upstream, path = '/') {
  const where = upstream.path ? { socketPath: upstream.path } : { host: '127.0.0.1', port: upstream.port };
  return new Promise((resolvePromise) => {
    const req = request({ ...where, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolvePromise(body));
    });
    req.on('error', () => resolvePromise(undefined));
    req.end();
  });
}

/** nginx with one worker process as a reverse proxy with upstream keep-alive. */
export async function startNginx(upstream, tls) {
  const dir = tmp('molt-nginx-');
  const port = await new Promise((r) => {
    const srv = createNetServer().listen(0, '127.0.0.1', () => {
      const { port: p } = srv.address();
      srv.close(() => r(p));
    });
  });
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
daemon off;
${process.getuid?.() === 0 ? 'user root;  # reaches sandboxed workers\' sockets, in the root-only data dir' : ''}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream worker { server ${upstream.path ? `unix:${upstream.path}` : `127.0.0.1:${upstream.port}`}; keepalive 64; }
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port}${tls ? ' ssl' : ''};
${tls ? `    ssl_certificate ${tls.cert};\n    ssl_certificate_key ${tls.key};\n    ssl_session_cache shared:SSL:1m;\n` : ''}    location / {
      proxy_pass http://worker;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`,
  );
  const child = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      await connectLoopback(port);
      break;
    } catch {
      await sleep(50);
    }
  }
  return { url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, pid: child.pid, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }) };
}

/** Resolves once something accepts connections on the loopback port. */
function connectLoopback(port) {
  return new Promise((ok, fail) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.destroy();
      ok();
    });
    socket.on('error', fail);
  });
}

/** A self-signed certificate for localhost and 127.0.0.1 (openssl), the same for nginx and molt. */
export function selfSignedCertificate(dir = tmp('molt-cert-')) {
  const cert = join(dir, 'bench.crt');
  const key = join(dir, 'bench.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,DNS:bench.localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'pipe' });
  return { cert, key };
}

/** The plain proxy a Node user would write: node:http with a keep-alive agent, piping both ways. */
export async function startPlainNodeProxy(upstream) {
  const where = JSON.stringify(upstream.path ? { socketPath: upstream.path } : { host: '127.0.0.1', port: upstream.port });
  const code = `
const http = require('node:http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
http.createServer((req, res) => {
  const up = http.request({ ...${where}, method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    ur.pipe(res);
  });
  up.on('error', () => { res.statusCode = 502; res.end(); });
  req.pipe(up);
}).listen(0, '127.0.0.1', function () { process.send(this.address().port); });`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise((r) => child.once('message', r));
  return { url: `http://127.0.0.1:${port}`, pid: child.pid, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }) };
}
