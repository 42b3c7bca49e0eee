/**
 * The entry of every worker process. It loads the app's release, owns the listening socket,
 * calls the app's `fetch` through one slot, and talks to the server on the IPC channel.
 *
 * Environment: MOLT_RELEASE_DIR, MOLT_ENTRY, MOLT_WORKER_ID, and where to listen: MOLT_SOCKET (a Unix
 * socket, in a sandbox) or MOLT_HOST and MOLT_PORT (0 = any).
 */
import { createServer } from 'node:http';
import { createServer as createNetServer, Socket } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { register } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MOLT_APP_ENTRY } from './molt-app-entry.js';
import { ControlChannel } from './control-channel.js';
import type { ServerToWorker, UpgradeResult, WorkerToServer } from './control-messages.js';
import { type AppSlot, fetchHandler } from './serve-fetch.js';
import { WebSockets } from './web-socket.js';
import { installWebObjects } from './web-objects.js';
import { HotUpgrader, type ProcessRuntime } from './hot-upgrade.js';
import { MANIFEST_FILE } from '../release/manifest.js';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { appExport } from './app-export.js';
import type { ReleaseManifest } from '../store/types.js';
import type { AppModule, webSocketRuntime as WebSocketRuntime } from '@molt/app';

// `ps` names it, as it names the data plane and the control plane.
if (process.env.MOLT_WORKER_ID) process.title = `molt: worker ${process.env.MOLT_WORKER_ID} ${process.env.MOLT_NAMESPACE}/${process.env.MOLT_APP}`;

/** The most the data plane may send in one message: upgrade plans of large apps run to megabytes. */
const MAX_FROM_SERVER = 64 * 1024 * 1024;
/** The most a connection to the control socket may send before it has given the secret. */
const MAX_UNTRUSTED = 1024;

/**
 * The data plane that owns this worker talks to it on one channel at a time: first the socket at
 * fd 3 from the data plane that started it, later a connection to its control socket from a data
 * plane that adopted it (after a restart or a takeover). When that channel closes the worker keeps
 * serving for MOLT_ADOPT_GRACE_MS, waiting to be adopted, then stops by itself. Run by hand, or by
 * `molt app run` (no control socket), it stops when its channel closes.
 */
const controlSocket = process.env.MOLT_CONTROL_SOCKET;
const adoptGraceMs = Number(process.env.MOLT_ADOPT_GRACE_MS ?? 600_000);
let owner: ControlChannel<ServerToWorker, WorkerToServer> | undefined;
let secret: Buffer | undefined;
let orphaned: NodeJS.Timeout | undefined;
let listening: { port?: number; socket?: string } | undefined;
let draining = false;
/** Set once the app has loaded, when its release has a manifest to upgrade from. */
let upgrader: HotUpgrader | undefined;

function own(channel: ControlChannel<ServerToWorker, WorkerToServer>): void {
  const before = owner;
  owner = channel;
  clearTimeout(orphaned);
  orphaned = undefined;
  before?.close();
}

function lost(channel: ControlChannel<ServerToWorker, WorkerToServer>): void {
  if (owner !== channel) return;
  owner = undefined;
  // Still loading: no data plane counts on it. Unadoptable: nothing can take it back.
  if (!listening || !controlSocket) return void (listening ? shutdown() : process.exit(0));
  console.error(`molt: the molt server is gone; this worker keeps serving and waits ${adoptGraceMs} ms to be taken back`);
  orphaned = setTimeout(() => {
    console.error(`molt: no molt server took this worker back within ${adoptGraceMs} ms; it stops`);
    void shutdown();
  }, adoptGraceMs);
}

function sameSecret(given: unknown): boolean {
  if (!secret || typeof given !== 'string') return false;
  const b = Buffer.from(given);
  return b.length === secret.length && timingSafeEqual(b, secret);
}

if (process.env.MOLT_CONTROL_FD) {
  const first: ControlChannel<ServerToWorker, WorkerToServer> = new ControlChannel<ServerToWorker, WorkerToServer>(
    new Socket({ fd: Number(process.env.MOLT_CONTROL_FD), readable: true, writable: true }),
    (msg) => {
      // The data plane that started it says the secret first; later data planes must repeat it.
      if (msg.type === 'hello') secret ??= Buffer.from(String(msg.secret));
      else onControl(msg);
    },
    () => lost(first),
    MAX_FROM_SERVER,
  );
  owner = first;
}

if (controlSocket) {
  rmSync(controlSocket, { force: true });
  const adoption = createNetServer((socket) => {
    let trusted = false;
    const untrusted = setTimeout(() => channel.close(), 5000);
    const channel: ControlChannel<ServerToWorker, WorkerToServer> = new ControlChannel<ServerToWorker, WorkerToServer>(
      socket,
      (msg) => {
        if (trusted) return onControl(msg);
        clearTimeout(untrusted);
        if (msg.type !== 'hello' || !sameSecret(msg.secret)) return channel.close();
        trusted = true;
        channel.maxLength = MAX_FROM_SERVER;
        own(channel);
        channel.send({ type: 'adopted', release: upgrader?.releaseId ?? process.env.MOLT_RELEASE ?? 'local', listening, draining });
      },
      () => {
        clearTimeout(untrusted);
        lost(channel);
      },
      MAX_UNTRUSTED,
    );
  });
  adoption.listen(controlSocket);
  // It never keeps the worker alive by itself.
  adoption.unref();
}

const send = (msg: WorkerToServer): void => {
  owner?.send(msg);
};

installWebObjects();
// Where `@molt/app` is not found by plain resolution (`molt app run`: the app's own node_modules
// would win), loader hooks point it at the runtime's copy. Server workers do without: the data dir
// holds node_modules/@molt/app → the runtime's copy, and hooks cost every import a thread hop.
if (process.env.MOLT_APP_HOOK === '1') {
  register('./loader-hooks.js', import.meta.url, { data: { moltAppUrl: pathToFileURL(MOLT_APP_ENTRY).href } });
}

const releaseDir = process.env.MOLT_RELEASE_DIR ?? process.cwd();
const entry = process.env.MOLT_ENTRY ?? 'index.js';

/** The user's name of the entry (`index.ts`), from the release's manifest; the compiled name without one. */
function entrySource(): string {
  const manifest = join(releaseDir, MANIFEST_FILE);
  if (!existsSync(manifest)) return entry;
  const { modules } = JSON.parse(readFileSync(manifest, 'utf8')) as ReleaseManifest;
  return modules.find((m) => m.path === entry)?.source ?? entry;
}

const source = entrySource();
let app: AppModule;
try {
  const file = join(releaseDir, entry);
  // Held in an object, never returned from an async function: a thenable export would be awaited.
  const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  app = appExport(mod, source, typeof mod.default === 'object' || typeof mod.default === 'function' ? '' : readFileSync(file, 'utf8'));
} catch (err) {
  console.error(`molt: failed to load ${source}:`, err);
  const message = err instanceof Error ? err.message : String(err);
  send({ type: 'load-failed', error: (message.startsWith(source) ? message : `${source}: ${message}`).slice(0, 64 * 1024) });
  process.exit(1);
}

const slot: AppSlot = { app };
const { processRuntime, webSocketRuntime } = (await import(pathToFileURL(MOLT_APP_ENTRY).href)) as { processRuntime: ProcessRuntime; webSocketRuntime: typeof WebSocketRuntime };
const webSockets = new WebSockets(slot, (err) => console.error('molt: WebSocket upgrade failed:', err));
webSocketRuntime.install(webSockets.upgradeWebSocket);
const linksDir = process.env.MOLT_LINKS_DIR ?? join(releaseDir, '..', '.links', String(process.pid));
upgrader = existsSync(join(releaseDir, MANIFEST_FILE)) ? new HotUpgrader(slot, process.env.MOLT_RELEASE ?? 'local', releaseDir, processRuntime, linksDir) : undefined;
const server = createServer(
  fetchHandler(slot, (err) => console.error('molt: request failed:', err), () => draining),
);
// Longer than the gateway's idle timeout, so the gateway closes idle sockets first and
// never writes into one the worker is closing (nodejs/node#47130).
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;
server.on('upgrade', (req, socket, head) => {
  // The raw hook, for Node libraries, when the app has one; else `fetch`, where upgradeWebSocket(request) serves.
  // Asked with `in`: a router Proxy answers every property with a function, so it has none of its own.
  if ('upgrade' in slot.app && typeof slot.app.upgrade === 'function') slot.app.upgrade(req, socket, head);
  else webSockets.handle(req, socket, head);
});

function drain(): void {
  if (draining) return;
  draining = true;
  server.close();
  server.closeIdleConnections();
}

async function shutdown(): Promise<void> {
  drain();
  // In-flight requests finish and open WebSockets are closed with 1001 (their drain deadline has
  // passed: the data plane stops a worker after it); the SIGKILL after the grace period bounds this.
  await Promise.all([new Promise<void>((resolvePromise) => server.close(() => resolvePromise())), webSockets.closeAll('the worker stops', 2000)]);
  process.exit(0);
}

process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
function onControl(msg: ServerToWorker): void {
  if (msg.type === 'drain') drain();
  else if (msg.type === 'hello') return;
  else if (msg.type === 'upgrade') {
    const result: Promise<UpgradeResult> = upgrader
      ? upgrader.apply(msg)
      : Promise.resolve({ ok: false, phase: 'load', error: `this worker has no ${MANIFEST_FILE} to upgrade from` });
    void result.then((r) => {
      if (r.ok) console.log(`molt: upgraded in place to release ${r.release.slice(0, 12)} in ${r.durationMs.toFixed(1)} ms (${r.retainedModules} module versions retained)`);
      else console.error(`molt: upgrade to ${msg.toRelease.slice(0, 12)} failed at ${r.phase}${r.module ? ` in ${r.module}` : ''}: ${r.error}; the old code and state keep running`);
      send({ type: 'upgrade-result', id: msg.id, result: r });
    });
  }
}

const socket = process.env.MOLT_SOCKET;
if (socket) {
  // Only the gateway reaches it: the socket's directory is in no other sandbox.
  server.listen(socket, () => {
    listening = { socket };
    send({ type: 'listening', socket });
  });
} else {
  const port = Number(process.env.MOLT_PORT ?? 0);
  server.listen(port, process.env.MOLT_HOST ?? '127.0.0.1', () => {
    const address = server.address();
    const actual = typeof address === 'object' && address ? address.port : port;
    listening = { port: actual };
    send({ type: 'listening', port: actual });
    if (!owner) console.log(`molt: ${entry} listening on http://${process.env.MOLT_HOST ?? '127.0.0.1'}:${actual}`);
  });
}
