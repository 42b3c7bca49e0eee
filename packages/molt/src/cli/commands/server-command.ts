import type { Command } from 'commander';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { connect, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { TAKEOVER_SOCKET, type TakeoverAnswer, type TakeoverRequest } from '../../data-plane/protocol.js';
import { ControlChannel } from '../../runtime/control-channel.js';
import { fileURLToPath } from 'node:url';
import type { UpdateResult } from '../../control-plane/app-service.js';
import { ApiError, Client } from '../client.js';
import { SERVER_DOMAIN } from '../../config/validate-config.js';
import type { TlsFiles } from '../../gateway/tls.js';
import { MoltError } from '../../errors.js';
import { followRollout, pushRelease } from '../deploy.js';
import { run, say } from '../output.js';

const EXAMPLE_DIR = fileURLToPath(new URL('../../../../../examples/get-start', import.meta.url));

function positive(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new MoltError('MOLT_ERR_BAD_REQUEST', `${flag} must be a whole number of at least 1 (got ${JSON.stringify(value)})`);
  return n;
}

function serverDomain(value: string): string {
  const domain = value.toLowerCase().replace(/\.$/, '');
  if (!SERVER_DOMAIN.test(domain)) throw new MoltError('MOLT_ERR_BAD_REQUEST', `--domain ${JSON.stringify(value)} is not a domain name; give one such as apps.example.com (without scheme, port or path), or localhost on this machine`);
  return domain;
}

function tlsFiles(opts: { tlsCert?: string; tlsKey?: string; tlsSni?: string[] }): TlsFiles | undefined {
  if (!opts.tlsCert && !opts.tlsKey && !opts.tlsSni?.length) return undefined;
  if (!opts.tlsCert || !opts.tlsKey) throw new MoltError('MOLT_ERR_BAD_REQUEST', 'HTTPS needs both --tls-cert and --tls-key (the default certificate, for clients that send no SNI or a name with no certificate of its own)');
  const sni = (opts.tlsSni ?? []).map((s) => {
    const m = /^([^=]+)=([^,]+),(.+)$/.exec(s);
    if (!m || !SERVER_DOMAIN.test(m[1]!.replace(/^\*\./, ''))) throw new MoltError('MOLT_ERR_BAD_REQUEST', `--tls-sni ${JSON.stringify(s)} is not <host>=<cert file>,<key file>; write e.g. --tls-sni shop.example.com=shop.crt,shop.key`);
    return { host: m[1]!, cert: resolve(m[2]!), key: resolve(m[3]!) };
  });
  return { cert: resolve(opts.tlsCert), key: resolve(opts.tlsKey), sni };
}

function defaultDataDir(): string {
  return process.env.MOLT_DATA_DIR ?? join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'molt');
}

/** Deploys the example app if it is not there yet, and keeps an invoker token for it. */
async function deployExample(url: string, dataDir: string, exampleDir: string): Promise<string> {
  const admin = new Client(url, readFileSync(join(dataDir, 'admin-token'), 'utf8').trim());
  let exists = true;
  await admin.request('GET', '/api/v1/namespaces/default/apps/get-start').catch((err) => {
    if (err instanceof ApiError && err.status === 404) exists = false;
    else throw err;
  });
  if (!exists) {
    const { prepareVolumes } = await import('./volume-commands.js');
    // Its volume events are printed by the server itself.
    await prepareVolumes(admin, 'default', exampleDir, undefined);
    const { built, release } = await pushRelease(admin, 'default', exampleDir, undefined, say);
    const result = await admin.request<UpdateResult>('POST', '/api/v1/namespaces/default/apps', { config: built.spec, releaseId: release.id });
    // The server prints the rollout's events itself; following it here is only to wait for its end.
    const final = await followRollout(admin, 'default', result.app, result.rollout!.id, () => {});
    if (final?.type !== 'rollout.succeeded') throw new Error('the example app failed to deploy; see `molt app logs --app get-start`');
  }
  const tokenFile = join(dataDir, 'example-token');
  if (existsSync(tokenFile)) return readFileSync(tokenFile, 'utf8').trim();
  const { token } = await admin.request<{ token: string }>('POST', '/api/v1/tokens', { namespace: 'default', role: 'invoker', name: 'example invoker' });
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  return token;
}

/**
 * `molt server --takeover`: asks the server running on the data dir to hand over to a new one run
 * with this command line (this molt, these options), prints its progress, and ends when the new one
 * serves. The new server is started by the old one (it inherits the listening socket), so it is not
 * this process's child.
 */
async function takeOver(dataDir: string): Promise<void> {
  const argv = [process.execPath, ...process.execArgv, process.argv[1]!, ...process.argv.slice(2).filter((a) => a !== '--takeover')];
  const socket = await new Promise<Socket>((resolvePromise, reject) => {
    const s = connect(join(dataDir, TAKEOVER_SOCKET));
    s.once('connect', () => resolvePromise(s));
    s.once('error', (err: NodeJS.ErrnoException) =>
      reject(new MoltError('MOLT_ERR_BAD_REQUEST', `no molt server to take over on data dir ${dataDir} (${err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? 'none is running' : err.message}); start one without --takeover`)),
    );
  });
  const request: TakeoverRequest = { argv, cwd: process.cwd(), env: process.env as Record<string, string> };
  const outcome = await new Promise<{ done: true; pid: number } | { error: string } | undefined>((resolvePromise) => {
    let last: { done: true; pid: number } | { error: string } | undefined;
    const channel = new ControlChannel<TakeoverAnswer, TakeoverRequest>(
      socket,
      (m) => {
        if ('progress' in m) say(`takeover: ${m.progress}`);
        else last = m;
      },
      () => resolvePromise(last),
      1024 * 1024,
    );
    channel.send(request);
  });
  if (!outcome || 'error' in outcome) throw new MoltError('MOLT_ERR_TAKEOVER_FAILED', outcome?.error ?? 'the running server closed the takeover without an answer; see its output');
  say(`takeover: done; molt server pid ${outcome.pid} serves ${dataDir}`);
}

export function serverCommand(program: Command): void {
  program
    .command('server')
    .description('run the molt server: API, gateway and workers on one port')
    .option('--data-dir <dir>', 'where state, blobs and logs live (env MOLT_DATA_DIR)', defaultDataDir())
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0 = any free port)', '7070')
    .option('--domain <domain...>', 'route <app>.<namespace>.<domain> and <app>.<domain> (default namespace) to each app at its root path')
    .option('--tls-cert <file>', 'serve HTTPS on the port with this PEM certificate (with --tls-key)')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--tls-sni <host=cert,key...>', 'another certificate for a hostname (or *.domain), chosen by SNI; repeatable')
    .option('--session-hours <n>', 'how long a browser session made on an app\'s host lasts', '12')
    .option('--database-url <url>', 'postgres://… to keep state in PostgreSQL (env MOLT_DATABASE_URL; default: SQLite in the data dir)', process.env.MOLT_DATABASE_URL)
    .option('--max-upload-bytes <n>', 'largest upload accepted', String(512 * 1024 * 1024))
    .option('--max-upload-files <n>', 'most files a release or volume revision may have', '100000')
    .option('--max-volume-bytes <n>', 'most bytes a volume revision may hold', String(10 * 1024 ** 3))
    .option('--cpus <n>', 'CPU cores offered to workers (default: all of this machine)')
    .option('--memory-mb <n>', 'memory offered to workers in MiB (default: all of this machine)')
    .option('--cgroup-root <dir>', 'where cgroups are mounted; worker limits are enforced there', '/sys/fs/cgroup')
    .option('--upstream-timeout-ms <n>', 'how long a worker has to answer a request before 504', '60000')
    .option('--queue-timeout-ms <n>', 'how long a request waits for a ready worker before 503', '30000')
    .option('--max-queue <n>', 'requests per app that may wait for a ready worker before 503', '1000')
    .option('--api-wait-ms <n>', 'how long an API request waits for a restarting control plane before 503 with Retry-After', '15000')
    .option('--max-workers-per-app <n>', 'most workers one app may ask for', '64')
    .option('--max-concurrent-uploads <n>', 'uploads read at once (more wait their turn)', '4')
    .option('--require-isolation', 'refuse to start where workers cannot be sandboxed (bubblewrap, a user per namespace)')
    .option('--no-isolation', 'run workers unsandboxed (they say NOT ISOLATED); for trials and benchmarks only')
    .option('--worker-uids <range>', 'uids the namespaces\' workers run as, one each', '100000-165535')
    .option('--scratch-mb <n>', 'size of each sandboxed worker\'s private /tmp and scratch dir, MiB', '512')
    .option('--max-log-mb <n>', 'MiB of a worker\'s log file before it is rotated (the last two parts are kept)', '16')
    .option('--log-format <format>', 'how events are printed: text (default on a terminal) or json (default otherwise)')
    .option('--adopt-grace-ms <n>', 'how long a worker keeps serving after its molt server is gone, waiting for the next one to adopt it, before it stops', '600000')
    .option('--keep-workers', 'on stop, leave the workers running for the next `molt server` on this data dir to adopt')
    .option('--takeover', 'take over from the molt server running on this data dir (to upgrade molt itself): same port, workers adopted, no request failed')
    .option('--takeover-drain-ms <n>', 'when taken over, how long in-flight requests and streams may take before they are cut', '30000')
    .option('--metrics-interval-ms <n>', 'how often the dashboard\'s figures (requests, errors, latency, workers\' CPU and memory) are read; an hour of them is kept', '5000')
    .option('--metrics-listen <host:port>', 'also serve /metrics for Prometheus here, without a token (on the main port it needs the server admin token)')
    .option('--example [dir]', 'deploy the example app (examples/get-start) and print how to call it')
    .action(
      run(async (opts: {
        dataDir: string;
        host: string;
        port: string;
        domain?: string[];
        sessionHours: string;
        tlsCert?: string;
        tlsKey?: string;
        tlsSni?: string[];
        databaseUrl?: string;
        maxUploadBytes: string;
        maxUploadFiles: string;
        maxVolumeBytes: string;
        cpus?: string;
        memoryMb?: string;
        cgroupRoot: string;
        upstreamTimeoutMs: string;
        queueTimeoutMs: string;
        maxQueue: string;
        maxWorkersPerApp: string;
        apiWaitMs: string;
        adoptGraceMs: string;
        keepWorkers?: boolean;
        takeover?: boolean;
        takeoverDrainMs: string;
        maxConcurrentUploads: string;
        requireIsolation?: boolean;
        isolation: boolean;
        workerUids: string;
        scratchMb: string;
        maxLogMb: string;
        example?: string | boolean;
        logFormat?: string;
        metricsIntervalMs: string;
        metricsListen?: string;
      }) => {
        const dataDir = resolve(opts.dataDir);
        if (opts.takeover) return takeOver(dataDir);
        const logFormat = opts.logFormat ?? (process.stderr.isTTY ? 'text' : 'json');
        if (logFormat !== 'text' && logFormat !== 'json') throw new MoltError('MOLT_ERR_BAD_REQUEST', `--log-format must be text or json (got ${JSON.stringify(logFormat)})`);
        const { startServer } = await import('../../control-plane/server.js');
        const server = await startServer({
          dataDir,
          host: opts.host,
          port: Number(opts.port),
          domains: (opts.domain ?? []).map(serverDomain),
          tls: tlsFiles(opts),
          sessionTtlMs: positive(opts.sessionHours, '--session-hours') * 60 * 60 * 1000,
          databaseUrl: opts.databaseUrl || undefined,
          maxUploadBytes: Number(opts.maxUploadBytes),
          maxUploadFiles: Number(opts.maxUploadFiles),
          maxVolumeBytes: Number(opts.maxVolumeBytes),
          cpus: opts.cpus === undefined ? undefined : Number(opts.cpus),
          memoryMb: opts.memoryMb === undefined ? undefined : Number(opts.memoryMb),
          cgroupRoot: opts.cgroupRoot,
          upstreamTimeoutMs: Number(opts.upstreamTimeoutMs),
          queueTimeoutMs: Number(opts.queueTimeoutMs),
          maxQueue: Number(opts.maxQueue),
          maxWorkersPerApp: positive(opts.maxWorkersPerApp, '--max-workers-per-app'),
          apiWaitMs: positive(opts.apiWaitMs, '--api-wait-ms'),
          adoptGraceMs: positive(opts.adoptGraceMs, '--adopt-grace-ms'),
          keepWorkers: opts.keepWorkers === true,
          takeoverDrainMs: positive(opts.takeoverDrainMs, '--takeover-drain-ms'),
          maxConcurrentUploads: positive(opts.maxConcurrentUploads, '--max-concurrent-uploads'),
          requireIsolation: opts.requireIsolation === true,
          noIsolation: opts.isolation === false,
          workerUids: opts.workerUids,
          scratchMb: positive(opts.scratchMb, '--scratch-mb'),
          maxLogMb: positive(opts.maxLogMb, '--max-log-mb'),
          logFormat,
          metricsIntervalMs: positive(opts.metricsIntervalMs, '--metrics-interval-ms'),
          metricsListen: opts.metricsListen,
        });
        console.log(`molt server listening on ${server.url} (data in ${dataDir})`);
        console.log(`workers: ${server.isolation}`);
        if (server.standby) console.log(`standing by: ${server.standby}; this server takes the lead when it lapses (admin tokens are the leader's)`);
        else if (server.adminToken) {
          console.log(`admin token (shown once, also in ${join(dataDir, 'admin-token')}, mode 0600):\n  ${server.adminToken}`);
          console.log(`log in with:\n  npx molt login --server ${server.url} --token ${server.adminToken}`);
        } else console.log(`admin token: in ${join(dataDir, 'admin-token')}`);
        if (opts.example) {
          const dir = typeof opts.example === 'string' ? resolve(opts.example) : EXAMPLE_DIR;
          const token = await deployExample(server.url, dataDir, dir);
          console.log(`\nexample app get-start is running. Call it with:`);
          console.log(`  curl -H 'Authorization: Bearer ${token}' ${server.url}/api/routes/v1/default/get-start/hello`);
          console.log(`  curl -N -H 'Authorization: Bearer ${token}' ${server.url}/api/routes/v1/default/get-start/sse`);
          console.log(`  curl -H 'Authorization: Bearer ${token}' ${server.url}/api/routes/v1/default/get-start/show-volume`);
        }
        const how = await new Promise<'signal' | 'retired'>((r) => {
          process.once('SIGINT', () => r('signal'));
          process.once('SIGTERM', () => r('signal'));
          void server.retired.then(() => r('retired'));
        });
        // Taken over: the new server has the port and the workers; this one has drained.
        if (how === 'retired') process.exit(0);
        say(opts.keepWorkers ? 'molt server stopping: its workers keep running for the next server to adopt' : 'molt server stopping: draining workers');
        await server.close();
      }),
    );
}
