import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, mkdirSync, openSync, realpathSync } from 'node:fs';
import { request } from 'node:http';
import { connect, Socket } from 'node:net';
import { constants } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { AppSpec } from '../config/app-spec.js';
import type { WorkerAddress } from '../gateway/target.js';
import type { Adopted, ServerToWorker, UpgradeRequest, UpgradeResult, WorkerToServer } from '../runtime/control-messages.js';
import { MOLT_APP_ENTRY, moltAppPackageDir } from '../runtime/molt-app-entry.js';
import { CONTROL_FD } from '../runtime/control-channel.js';
import { runtimeId } from '../runtime/runtime-id.js';
import { lineSplitter, type LogLine } from './log-hub.js';
import { WorkerControl } from './worker-control.js';
import { bwrapArgs, CONTROL_SOCKET_NAME, dropTo, runtimeDirs, SANDBOX, SOCKET_NAME } from './sandbox/bwrap-args.js';
import { parentOf, startTimeOf, stillRuns, type WorkerRecord, type WorkerRecords } from '../data-plane/worker-records.js';

const WORKER_MAIN = fileURLToPath(new URL('../runtime/worker-main.js', import.meta.url));
/** Variables a worker inherits from the server; everything else comes from the app's env. */
const INHERITED_ENV = ['PATH', 'LANG', 'LC_ALL', 'TZ', 'NODE_EXTRA_CA_CERTS'];
/** The pipe bubblewrap reports the sandboxed process's pid on (stdio index). */
const STATUS_FD = 4;
const NL = '\n';
const ENTER_CGROUPS = `IFS='${NL}'; for f in $MOLT_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; unset MOLT_CGROUP_PROCS; exec "$0" "$@"`;

/** How a worker is sandboxed; undefined runs it as a plain child process (NOT ISOLATED). */
export interface WorkerSandbox {
  /** The uid it runs as; null keeps molt's own (a server not running as root). */
  uid: number | null;
  /** passwd and group files naming that user. */
  passwd?: { passwd: string; group: string };
  /** Size of each of its private tmpfs (/tmp, scratch, links). */
  scratchBytes: number;
}

export interface WorkerLaunch {
  id: string;
  namespace: string;
  app: string;
  revision: number;
  releaseId: string;
  /** Its release, materialized (host path). */
  releaseDir: string;
  /** Where its app's releases are materialized (host path); hot upgrades load from there. */
  releasesDir: string;
  /** The volumes it reads, materialized (host paths). */
  volumes: WorkerVolume[];
  /**
   * A directory of its own, removed when it ends: its socket when sandboxed; otherwise its
   * scratch dir and hot upgrades' link directories.
   */
  runDir: string;
  /** `cgroup.procs` files the process enters before Node starts (its limits); empty for none. */
  cgroupProcs: string[];
  sandbox?: WorkerSandbox;
  /** `CUDA_VISIBLE_DEVICES`: the GPUs it was given; undefined when the node has none. */
  cudaVisibleDevices?: string;
  entry: string;
  spec: AppSpec;
  /** Loopback address an unsandboxed worker listens on. */
  host: string;
}

export interface WorkerVolume {
  /** The name the app's config uses. */
  ref: string;
  revision: string;
  path: string;
}

/**
 * How a worker finds its volumes: `MOLT_VOLUMES` (JSON, for `runtime.volume()`) and one
 * `MOLT_VOLUME_<NAME>` each (the name upper-cased, every character outside A–Z and 0–9 made `_`).
 */
export function volumeEnv(volumes: WorkerVolume[]): Record<string, string> {
  const env: Record<string, string> = { MOLT_VOLUMES: JSON.stringify(Object.fromEntries(volumes.map((v) => [v.ref, { path: v.path, revision: v.revision }]))) };
  for (const v of volumes) env[`MOLT_VOLUME_${v.ref.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] = v.path;
  return env;
}

export interface WorkerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when molt asked it to stop. */
  expected: boolean;
  /** True when how it ended is not known: it was adopted, so it was no child of this data plane. */
  unknown?: boolean;
}

/** Where the data plane keeps what adopting a worker takes, and how long a worker waits to be adopted. */
export interface WorkerHome {
  records: WorkerRecords;
  adoptGraceMs: number;
}

/** Why a recorded worker could not be adopted. */
export class WorkerGone extends Error {}

/** The reason a worker failed to start, for `app update` to print. */
export class WorkerStartError extends Error {}

/** Where the sandbox shows a worker what it is given, or the host paths when it runs unsandboxed. */
function insidePaths(launch: WorkerLaunch): { release: string; releases: string; volumes: WorkerVolume[]; scratch: string; links: string; control: string; socket?: string } {
  if (launch.sandbox) {
    return {
      release: SANDBOX.release,
      releases: SANDBOX.releases,
      volumes: launch.volumes.map((v) => ({ ...v, path: join(SANDBOX.volumes, v.ref) })),
      scratch: SANDBOX.scratch,
      links: SANDBOX.links,
      control: SANDBOX.control,
      socket: SANDBOX.socket,
    };
  }
  return {
    release: launch.releaseDir,
    releases: launch.releasesDir,
    volumes: launch.volumes,
    scratch: join(launch.runDir, 'scratch'),
    links: join(launch.runDir, 'links'),
    control: join(launch.runDir, CONTROL_SOCKET_NAME),
  };
}

/** Where the data plane reaches a worker that says it listens at `listening`. */
function addressOf(launch: WorkerLaunch, listening: { port?: number }): WorkerAddress {
  // A sandboxed worker is reached only at its own socket, whatever it says.
  return launch.sandbox ? { path: join(launch.runDir, SOCKET_NAME) } : { host: launch.host, port: Number(listening.port) };
}

/** A signal number from an exit code past 128, as a sandbox reports a child killed by a signal. */
function signalOf(code: number): NodeJS.Signals | undefined {
  const n = code - 128;
  return (Object.entries(constants.signals) as [NodeJS.Signals, number][]).find(([, v]) => v === n)?.[0];
}

/**
 * One worker process: spawn (in its cgroups and sandbox) or adoption, readiness, drain and stop. It
 * knows nothing of the store; the supervisor records what it reports. Its output goes through two
 * FIFOs and its control channel can be opened again at its control socket, so a worker outlives
 * the data plane that started it and the next one adopts it (see WorkerRecords).
 */
export class WorkerProcess {
  child?: ChildProcess;
  private control?: WorkerControl;
  address?: WorkerAddress;
  /** What the last readiness request answered, for messages (`HTTP 503: "warming up"`, or the error). */
  lastReadiness = 'no answer yet';
  /** The pid of the worker's Node process: inside the sandbox, it is not the child we spawned. */
  pid?: number;
  /** The release it runs (a hot upgrade changes it). */
  releaseId: string;
  /** The worker runtime it was started with (`runtimeId()` of the molt that started it; kept through adoptions). */
  runtime: string;
  private startTime?: string;
  /** What its control socket asks for: made for it at spawn, read from its record at adoption. */
  private secret = randomBytes(32).toString('base64url');
  private state: WorkerRecord['state'] = 'starting';
  private stopping = false;
  private exited?: WorkerExit;
  private exitWaiters: ((e: WorkerExit) => void)[] = [];
  private pidKnown: Promise<number | undefined> = Promise.resolve(undefined);
  /** Output streams still open; the worker is closed when it has exited and they have ended. */
  private outputs: Socket[] = [];
  private closedOnce = false;
  /** Let go of (release): what becomes of it is no longer this data plane's to watch. */
  private released = false;

  constructor(
    readonly launch: WorkerLaunch,
    /** Takes a line of output; while the promise it may return is pending, the worker's output is not read. */
    private readonly onLog: (l: LogLine) => Promise<void> | undefined | void,
    private readonly onExit: (e: WorkerExit) => void,
    /** Called once the process has exited and its output has ended. */
    private readonly onClosed: () => void,
    private readonly home: WorkerHome,
  ) {
    this.releaseId = launch.releaseId;
    this.runtime = runtimeId();
  }

  get id(): string {
    return this.launch.id;
  }

  /** Where the worker finds release `id` of its app (the path hot upgrades are given). */
  releasePath(id: string): string {
    return join(insidePaths(this.launch).releases, id);
  }

  /** Spawns the process; `onSpawned` fires when it is up (INITIALIZED). Resolves once it passes readiness. */
  async start(onSpawned: () => void): Promise<void> {
    const { launch } = this;
    const inside = insidePaths(launch);
    const env: Record<string, string> = {};
    for (const k of INHERITED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    Object.assign(env, launch.spec.env, {
      NODE_ENV: launch.spec.env.NODE_ENV ?? 'production',
      HOME: inside.scratch,
      TMPDIR: inside.scratch,
      MOLT_SCRATCH: inside.scratch,
      MOLT_WORKER_ID: launch.id,
      MOLT_APP: launch.app,
      MOLT_NAMESPACE: launch.namespace,
      MOLT_REVISION: String(launch.revision),
      MOLT_RELEASE: launch.releaseId,
      MOLT_RELEASE_DIR: inside.release,
      MOLT_LINKS_DIR: inside.links,
      MOLT_APP_ENTRY,
      MOLT_ENTRY: launch.entry,
      MOLT_CONTROL_FD: String(CONTROL_FD),
      MOLT_CONTROL_SOCKET: inside.control,
      MOLT_ADOPT_GRACE_MS: String(this.home.adoptGraceMs),
      ...(inside.socket ? { MOLT_SOCKET: inside.socket } : { MOLT_HOST: launch.host, MOLT_PORT: '0' }),
      ...volumeEnv(inside.volumes),
    });
    if (launch.cudaVisibleDevices !== undefined) env.CUDA_VISIBLE_DEVICES = launch.cudaVisibleDevices;
    // In a sandbox the binary is shown at its real path only.
    const node = [launch.sandbox ? realpathSync(process.execPath) : process.execPath, '--enable-source-maps'];
    if (launch.spec.resources.memoryMb) node.push(`--max-old-space-size=${Math.max(16, Math.floor(launch.spec.resources.memoryMb * 0.75))}`);
    node.push(WORKER_MAIN);
    let argv = node;
    if (launch.sandbox) {
      const { uid, passwd, scratchBytes } = launch.sandbox;
      const sandbox = bwrapArgs(
        {
          releaseDir: launch.releaseDir,
          releasesDir: launch.releasesDir,
          volumes: launch.volumes,
          runDir: launch.runDir,
          runtime: runtimeDirs(WORKER_MAIN),
          moltApp: moltAppPackageDir(),
          passwd,
          files: env.NODE_EXTRA_CA_CERTS ? [env.NODE_EXTRA_CA_CERTS] : [],
          scratchBytes,
        },
        STATUS_FD,
      );
      argv = ['bwrap', ...sandbox, '--', ...(uid === null ? [] : dropTo(uid)), ...node];
    } else {
      mkdirSync(inside.scratch, { recursive: true });
    }
    // A shell enters the cgroups, then becomes the worker (same pid): nothing of it runs unlimited.
    if (launch.cgroupProcs.length > 0) {
      env.MOLT_CGROUP_PROCS = launch.cgroupProcs.join(NL);
      argv = ['/bin/sh', '-c', ENTER_CGROUPS, ...argv];
    }
    // Its output goes to FIFOs it holds open for reading and writing too: with no data plane reading,
    // its writes wait (past the pipe's 64 KiB) rather than fail, and the next data plane reads on.
    const { records } = this.home;
    records.makeFifos(launch.id);
    this.readOutput('stdout');
    this.readOutput('stderr');
    const outFd = openSync(records.fifo(launch.id, 'stdout'), fsConstants.O_RDWR);
    const errFd = openSync(records.fifo(launch.id, 'stderr'), fsConstants.O_RDWR);
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), {
        cwd: launch.sandbox ? '/' : launch.releaseDir,
        env,
        // A session of its own: a signal to molt's process group (Ctrl-C in a terminal) is not one to its workers.
        detached: true,
        // fd 3: the control channel (a socket pair); fd 4: bubblewrap's status, for a sandbox.
        stdio: ['ignore', outFd, errFd, 'pipe', ...(launch.sandbox ? (['pipe'] as const) : [])],
      });
    } finally {
      closeSync(outFd);
      closeSync(errFd);
    }
    this.child = child;
    const control = this.attach(child.stdio[CONTROL_FD] as Duplex);
    this.pidKnown = launch.sandbox ? this.readSandboxPid(child) : Promise.resolve(child.pid);
    // A sandbox exits with 128 + n when its worker was killed by signal n.
    const exitOf = (code: number | null, signal: NodeJS.Signals | null): WorkerExit => {
      const killedBy = launch.sandbox && code !== null && code > 128 ? signalOf(code) : undefined;
      return killedBy ? { code: null, signal: killedBy, expected: this.stopping } : { code, signal, expected: this.stopping };
    };
    child.once('exit', (code, signal) => this.setExited(exitOf(code, signal)));
    // A process that never started (spawn failed) closes without an exit.
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      this.setExited(exitOf(code, signal));
      this.closeOutputsSoon();
    });

    const { path, timeoutMs } = launch.spec.readiness;
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let onListening: (address: WorkerAddress) => void = () => {};
    const listening = new Promise<WorkerAddress>((r) => (onListening = r));
    // Rejects on the first way a start can fail: load error, early exit, spawn error, deadline.
    const failed = new Promise<never>((_, reject) => {
      control.onMessage((msg: WorkerToServer) => {
        if (msg.type === 'listening') onListening(addressOf(launch, msg));
        else if (msg.type === 'load-failed') reject(new WorkerStartError(`the app failed to load: ${String(msg.error)}`));
      });
      child.once('exit', (code, signal) => reject(new WorkerStartError(`the worker exited before it was ready (${describeExit({ code, signal })}); see \`molt app logs\``)));
      child.once('error', (err) => reject(new WorkerStartError(`the worker could not start: ${err.message}`)));
      timer = setTimeout(
        () => reject(new WorkerStartError(`the worker was not ready within ${timeoutMs} ms (readiness GET ${path}, last answer: ${this.lastReadiness}); fix the app or raise readiness.timeoutMs`)),
        timeoutMs,
      );
    });
    failed.catch(() => {});
    try {
      await Promise.race([new Promise<void>((r) => child.once('spawn', () => r())), failed]);
      this.pid = await Promise.race([this.pidKnown, failed]);
      // Written before anything counts on the worker: a data plane that dies from here on leaves it adoptable.
      this.startTime = this.pid ? startTimeOf(this.pid) : undefined;
      this.writeRecord();
      onSpawned();
      this.address = await Promise.race([listening, failed]);
      await Promise.race([this.pollReadiness(path, deadline), failed]);
      this.state = 'running';
      this.writeRecord();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Takes over a worker another data plane started, from its record: the same process (pid and
   * start time), answering its control socket with its secret. Throws WorkerGone when it is not
   * there any more or does not answer; the caller stops what is left of it.
   */
  static async adopt(record: WorkerRecord, onLog: WorkerProcess['onLog'], onExit: (e: WorkerExit) => void, onClosed: () => void, home: WorkerHome): Promise<WorkerProcess> {
    const proc = new WorkerProcess(record.launch, onLog, onExit, onClosed, home);
    if (!stillRuns(record)) throw new WorkerGone(`worker ${record.launch.id} is gone (pid ${record.pid} no longer runs)`);
    proc.secret = record.secret;
    // A record from before runtimes were recorded is of an older molt's runtime.
    proc.runtime = record.runtime ?? 'unknown';
    proc.pid = record.pid;
    proc.pidKnown = Promise.resolve(record.pid);
    proc.startTime = record.startTime;
    // Read on where the last data plane stopped; nothing written meanwhile is lost.
    proc.readOutput('stdout');
    proc.readOutput('stderr');
    let adopted: Adopted;
    try {
      const socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect(join(record.launch.runDir, CONTROL_SOCKET_NAME));
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
      const control = proc.attach(socket);
      adopted = await new Promise<Adopted>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5000);
        control.onMessage((m) => {
          if (m.type === 'adopted') {
            clearTimeout(timer);
            resolve(m);
          }
        });
        control.onClose(() => reject(new Error('it closed its control socket (wrong secret?)')));
        control.send({ type: 'hello', secret: record.secret });
      });
    } catch (err) {
      proc.closeOutputs();
      throw new WorkerGone(`worker ${record.launch.id} (pid ${record.pid}) does not answer on its control socket: ${(err as Error).message}`);
    }
    proc.releaseId = adopted.release;
    proc.address = adopted.listening ? addressOf(record.launch, adopted.listening) : record.address;
    proc.state = record.state === 'running' && adopted.listening && !adopted.draining ? 'running' : 'starting';
    proc.writeRecord();
    // No exit status comes for a process that is not our child: it is gone when its channel closes
    // and its pid no longer runs.
    proc.control!.onClose(() => void proc.watchGone());
    return proc;
  }

  /**
   * A recorded worker that could not be adopted: reported exited (how is not known) until a control
   * plane has recorded it.
   */
  static lost(launch: WorkerLaunch, home: WorkerHome): WorkerProcess {
    const proc = new WorkerProcess(launch, () => {}, () => {}, () => {}, home);
    proc.exited = { code: null, signal: null, expected: false, unknown: true };
    return proc;
  }

  /** starting until it passes readiness (an adopted worker: whether it had when adopted), then running, then exited. */
  get phase(): 'starting' | 'running' | 'exited' {
    return this.exited ? 'exited' : this.state;
  }

  /** How it exited, once it has. */
  get exit(): WorkerExit | undefined {
    return this.exited;
  }

  /** Records that a hot upgrade moved it to another release. */
  upgraded(releaseId: string): void {
    this.releaseId = releaseId;
    this.writeRecord();
  }

  /**
   * Lets go of the worker without stopping it (a clean stop with --keep-workers): its channel and
   * output close, its record stays, and it waits for the next data plane to adopt it.
   */
  release(): void {
    this.released = true;
    this.control?.close();
    this.closeOutputs();
    // A child of ours keeps this process alive while it runs: it is on its own now.
    for (const s of this.child?.stdio ?? []) s?.destroy();
    this.child?.unref();
  }

  private attach(socket: Duplex): WorkerControl {
    const control = new WorkerControl(socket, (reason) => {
      this.onLog({ ts: new Date().toISOString(), workerId: this.id, stream: 'molt', line: `worker cut off: ${reason}` });
      void this.kill('SIGKILL');
    });
    // The secret goes first, on the socket pair only this process has.
    if (this.child) control.send({ type: 'hello', secret: this.secret });
    this.control = control;
    return control;
  }

  private writeRecord(): void {
    if (this.exited || !this.pid || !this.startTime) return;
    this.home.records.write({ launch: this.launch, secret: this.secret, pid: this.pid, startTime: this.startTime, state: this.state, releaseId: this.releaseId, runtime: this.runtime, address: this.address });
  }

  /** Reads one of the worker's FIFOs, a line at a time, pausing while the log cannot take more. */
  private readOutput(stream: 'stdout' | 'stderr'): void {
    // Non-blocking: opening for reading does not wait for a writer.
    const fd = openSync(this.home.records.fifo(this.id, stream), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    const out = new Socket({ fd, readable: true, writable: false });
    this.outputs.push(out);
    const split = lineSplitter((line) => {
      const wait = this.onLog({ ts: new Date().toISOString(), workerId: this.id, stream, line });
      // The log cannot take more now: the worker's writes block until it can.
      if (wait) {
        out.pause();
        void wait.then(() => out.resume());
      }
    });
    out.on('data', (c: Buffer) => split.push(c));
    out.on('error', () => out.destroy());
    out.on('close', () => {
      split.end();
      this.outputs = this.outputs.filter((o) => o !== out);
      this.maybeClosed();
    });
  }

  private closeOutputs(): void {
    for (const o of this.outputs) o.destroy();
  }

  /**
   * Once the process is gone its FIFOs end by themselves, unless something it started still holds
   * them (an app's own child process): that is not waited for.
   */
  private closeOutputsSoon(): void {
    setTimeout(() => this.closeOutputs(), 1000).unref();
  }

  private setExited(exit: WorkerExit): void {
    // Let go of: its end is for the data plane that has it now (or that adopts it next).
    if (this.exited || this.released) return;
    this.exited = exit;
    for (const w of this.exitWaiters.splice(0)) w(exit);
    this.onExit(exit);
    this.maybeClosed();
  }

  private maybeClosed(): void {
    if (!this.exited || this.outputs.length > 0 || this.closedOnce) return;
    this.closedOnce = true;
    this.home.records.remove(this.id);
    this.onClosed();
  }

  /** An adopted worker's channel closed: it is gone once its pid no longer runs. */
  private async watchGone(): Promise<void> {
    const record = { pid: this.pid!, startTime: this.startTime! };
    while (stillRuns(record)) {
      if (this.released) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.closeOutputsSoon();
    this.setExited({ code: null, signal: null, expected: this.stopping, unknown: true });
  }

  /**
   * bubblewrap writes `{ "child-pid": N }` on its status pipe once the sandbox exists. Only that
   * first report is read, and only a direct child of the sandbox process is believed; whatever comes
   * later (its exit status, or anything the app writes there) is drained unread. (Closing the pipe
   * instead would kill bubblewrap with SIGPIPE when it reports the exit.)
   */
  private readSandboxPid(child: ChildProcess): Promise<number | undefined> {
    const status = child.stdio[STATUS_FD] as NodeJS.ReadableStream;
    return new Promise((resolvePromise) => {
      let text = '';
      const done = (pid: number | undefined) => {
        status.removeAllListeners('data');
        status.on('data', () => {});
        resolvePromise(pid);
      };
      status.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        const end = text.indexOf('}');
        if (end < 0) return text.length > 4096 ? done(undefined) : undefined;
        let pid: number | undefined;
        try {
          pid = Number((JSON.parse(text.slice(0, end + 1)) as Record<string, unknown>)['child-pid']);
        } catch {
          pid = undefined;
        }
        done(pid && parentOf(pid) === child.pid ? pid : undefined);
      });
      status.on('end', () => done(undefined));
      status.on('error', () => done(undefined));
    });
  }

  private async pollReadiness(path: string, deadline: number): Promise<void> {
    while (Date.now() < deadline) {
      if (this.exited) throw new WorkerStartError(`the worker exited before it was ready (${describeExit(this.exited)})`);
      if (await this.ready()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new WorkerStartError(`readiness GET ${path} did not succeed within ${this.launch.spec.readiness.timeoutMs} ms (last answer: ${this.lastReadiness})`);
  }

  send(msg: ServerToWorker): void {
    this.control?.send(msg);
  }

  /** One readiness request: whether the worker answers its readiness path with 2xx now (`lastReadiness` says what it answered). */
  async ready(): Promise<boolean> {
    if (!this.address) return false;
    const answer = await probe(this.address, this.launch.spec.readiness.path).catch((err: Error) => err.message);
    if (typeof answer !== 'string' && answer.status >= 200 && answer.status < 300) return true;
    this.lastReadiness = typeof answer === 'string' ? answer : describeProbe(answer);
    return false;
  }

  /** Asks the worker to upgrade in place to `toRelease` (where it sees that release) and waits for its answer (see WorkerControl.upgrade). */
  upgrade(req: Omit<UpgradeRequest, 'type' | 'id' | 'releaseDir'>, timeoutMs: number): Promise<UpgradeResult> {
    if (!this.control) return Promise.resolve({ ok: false, phase: 'load', error: 'the worker is not running' });
    return this.control.upgrade({ ...req, releaseDir: this.releasePath(req.toRelease) }, timeoutMs);
  }

  waitExit(): Promise<WorkerExit> {
    if (this.exited) return Promise.resolve(this.exited);
    return new Promise((resolvePromise) => this.exitWaiters.push(resolvePromise));
  }

  /** Sends a signal to the worker's Node process (inside its sandbox, not the sandbox's own process). */
  private async kill(signal: NodeJS.Signals): Promise<void> {
    if (this.exited) return;
    const pid = (await this.pidKnown) ?? this.child?.pid;
    try {
      if (pid) process.kill(pid, signal);
    } catch {
      // already gone
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs: number): Promise<WorkerExit> {
    this.stopping = true;
    if (this.exited || (!this.child && !this.pid)) return this.exited ?? { code: 0, signal: null, expected: true };
    await this.kill('SIGTERM');
    const timer = setTimeout(() => void this.kill('SIGKILL'), graceMs);
    const exit = await this.waitExit();
    clearTimeout(timer);
    return exit;
  }
}

export function describeExit(exit: Pick<WorkerExit, 'code' | 'signal' | 'unknown'>): string {
  if (exit.unknown) return 'exit status unknown: it was adopted, not started, by this data plane';
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

/** What a readiness answer says, for messages: `HTTP 503: "warming up"`. */
function describeProbe(p: { status: number; body: string }): string {
  return `HTTP ${p.status}${p.body ? `: ${JSON.stringify(p.body)}` : ''}`;
}

/** One GET to a worker: its status code and the start of its body (200 characters at most). */
export function probe(address: WorkerAddress, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const where = 'path' in address ? { socketPath: address.path } : { host: address.host, port: address.port };
    const req = request({ ...where, path, method: 'GET', timeout: 2000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (body.length < 200) body += c;
      });
      res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, body: body.slice(0, 200).trim() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('readiness request timed out')));
    req.on('error', reject);
    req.end();
  });
}
