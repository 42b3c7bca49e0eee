import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess, tempDir, waitFor, writeApp } from '../helpers.js';
import { probeApp, type ProbeResult } from './probe-app.js';
import { record } from './report.js';

const boundary = 'worker sandbox';

describe('app code in a sandboxed worker reaches nothing that is not its own', () => {
  const server = new ServerProcess(tempDir(), ['--scratch-mb', '8'], { MOLT_SERVER_SECRET: 'not-for-apps' });
  let teamA = '';
  let teamB = '';
  let victimRelease = '';
  let victimVolumeTree = '';
  let outside: Server;
  let outsideUrl = '';

  const probe = async (app: string, ns: string, body: Record<string, unknown>): Promise<ProbeResult> => {
    const res = await fetch(server.route(ns, app, '/probe'), { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}` }, body: JSON.stringify(body) });
    expect(res.status).toBe(200);
    return (await res.json()) as ProbeResult;
  };
  const attacker = (body: Record<string, unknown>) => probe('prober', 'team-a', body);
  const refusedWith = (r: ProbeResult) => (r.ok ? `got through: ${String(r.value).slice(0, 60)}` : r.code);
  const workersOf = async (ns: string, app: string) => (await server.api('GET', `/api/v1/namespaces/${ns}/apps/${app}/workers`)).body.workers as { id: string; pid: number; port: number | null }[];

  beforeAll(async () => {
    // These attacks need the sandbox molt makes where it can: bubblewrap, and root for a user per namespace.
    if (spawnSync('bwrap', ['--version']).error) throw new Error('the sandbox tests need bubblewrap: apt-get install -y bubblewrap');
    if (process.getuid?.() !== 0) throw new Error('the sandbox tests check a user per namespace, which molt gives only when it runs as root: run the tests as root, as CI does');
    await server.start();
    for (const ns of ['team-a', 'team-b']) expect((await server.molt(['namespace', 'create', ns])).code).toBe(0);
    teamA = await server.createToken('team-a', 'deployer');
    teamB = await server.createToken('team-b', 'deployer');
    // The victim: another namespace's app, with a secret in its release and in a volume.
    const victim = probeApp(join(tempDir(), 'victim'), 'victim', { config: { volumes: [{ name: 'secrets' }] } });
    const vol = writeApp(join(tempDir(), 'vol'), { 'key.txt': 'volume secret of team-b' });
    expect((await server.molt(['volume', 'create', 'secrets', '-n', 'team-b'], { token: teamB })).code).toBe(0);
    expect((await server.molt(['volume', 'push', 'secrets', vol, '-n', 'team-b'], { token: teamB })).code).toBe(0);
    const created = await server.molt(['app', 'create', '-n', 'team-b'], { cwd: victim, token: teamB });
    expect(created.code, created.stderr).toBe(0);
    const app = (await server.api('GET', '/api/v1/namespaces/team-b/apps/victim')).body.app;
    victimRelease = app.release;
    victimVolumeTree = app.volumes[0].treeHash;
    const prober = probeApp(join(tempDir(), 'prober'), 'prober', { config: { workers: 2 } });
    const mine = await server.molt(['app', 'create', '-n', 'team-a'], { cwd: prober, token: teamA });
    expect(mine.code, mine.stderr).toBe(0);
    outside = createServer((_req, res) => res.end('reached the outside')).listen(0, '127.0.0.1');
    await new Promise((r) => outside.once('listening', r));
    outsideUrl = `http://127.0.0.1:${(outside.address() as { port: number }).port}/`;
  });
  afterAll(async () => {
    outside?.close();
    await server.stop();
  });

  it('cannot read the admin token, the database, blobs or logs of the data dir', async () => {
    for (const [what, op, path] of [
      ['admin token', 'read', 'admin-token'],
      ['database', 'read', 'molt.db'],
      ['blob store', 'list', 'blobs/sha256'],
      ['logs', 'list', 'logs'],
      ['worker records (their control secrets)', 'list', 'workers'],
      ['data dir', 'list', ''],
    ] as const) {
      const r = await attacker({ op, path: join(server.dataDir, path) });
      expect(r).toEqual({ ok: false, code: 'ENOENT' });
      record({ boundary, attack: `app code reads the ${what} (${op} <data-dir>/${path})`, expected: 'ENOENT: not in the sandbox', observed: refusedWith(r), refused: !r.ok });
    }
    const token = await attacker({ op: 'exec', cmd: 'cat', args: [join(server.dataDir, 'admin-token')] });
    expect(token.ok).toBe(false);
    record({ boundary, attack: 'app code runs `cat <data-dir>/admin-token`', expected: 'the command fails', observed: token.ok ? 'got through' : 'cat failed (no such file)', refused: !token.ok });
    const tmp = await attacker({ op: 'list', path: '/tmp' });
    expect(tmp.ok && !String(tmp.value).includes(basename(server.dataDir))).toBe(true);
  });

  it("cannot see another namespace's releases or volumes, nor other releases than its app's", async () => {
    const release = await attacker({ op: 'read', path: join(server.dataDir, 'apps', 'team-b', 'victim', 'releases', victimRelease, 'molt-release.json') });
    expect(release).toEqual({ ok: false, code: 'ENOENT' });
    record({ boundary, attack: "app code reads another namespace's release file by its host path", expected: 'ENOENT', observed: refusedWith(release), refused: !release.ok });
    const volume = await attacker({ op: 'read', path: join(server.dataDir, 'trees', victimVolumeTree, 'key.txt') });
    expect(volume).toEqual({ ok: false, code: 'ENOENT' });
    record({ boundary, attack: "app code reads another namespace's volume by its host path", expected: 'ENOENT', observed: refusedWith(volume), refused: !volume.ok });
    const releases = await attacker({ op: 'list', path: '/molt/releases' });
    const own = (await server.api('GET', '/api/v1/namespaces/team-a/apps/prober')).body.app.release;
    expect(releases).toEqual({ ok: true, value: own });
    record({ boundary, attack: 'app code lists /molt/releases', expected: 'only its own app\'s releases', observed: `sees ${String((releases as { value: string }).value).split(',').length} release(s), its own`, refused: releases.ok && releases.value === own });
    const volumes = await attacker({ op: 'list', path: '/molt/volumes' });
    expect(volumes.ok).toBe(false);
  });

  it('cannot write its release, its volumes or the blobs behind them, through its cwd or otherwise', async () => {
    for (const [what, path] of [
      ['./package.json (its cwd)', 'package.json'],
      ['/app/index.js', '/app/index.js'],
      ['a new file in /app', '/app/new.js'],
    ] as const) {
      const r = await attacker({ op: 'write', path });
      expect(r).toEqual({ ok: false, code: 'EROFS' });
      record({ boundary, attack: `app code writes ${what}`, expected: 'EROFS', observed: refusedWith(r), refused: !r.ok });
    }
    const chmod = await attacker({ op: 'chmod', path: '/app/index.js' });
    expect(chmod.ok).toBe(false);
    record({ boundary, attack: 'app code chmods a file of its release (hard-linked to a shared blob)', expected: 'EROFS or EPERM', observed: refusedWith(chmod), refused: !chmod.ok });
    const victimVol = await probe('victim', 'team-b', { op: 'write', path: '/molt/volumes/secrets/key.txt' });
    expect(victimVol).toEqual({ ok: false, code: 'EROFS' });
    record({ boundary, attack: 'app code writes a file of its own volume', expected: 'EROFS', observed: refusedWith(victimVol), refused: !victimVol.ok });
    // Nothing changed for anyone: the victim still reads its files as they were.
    expect(await probe('victim', 'team-b', { op: 'read', path: '/app/molt-release.json' })).toMatchObject({ ok: true, value: expect.stringContaining('"app": "victim"') });
    expect(await probe('victim', 'team-b', { op: 'read', path: '/molt/volumes/secrets/key.txt' })).toEqual({ ok: true, value: 'volume secret of team-b' });
  });

  it('runs as a user of its namespace: not root, not the server, another uid than other namespaces; no privileges', async () => {
    const mine = JSON.parse((await attacker({ op: 'info' }) as { value: string }).value);
    const theirs = JSON.parse((await probe('victim', 'team-b', { op: 'info' }) as { value: string }).value);
    const ns = (await server.api('GET', '/api/v1/namespaces')).body.namespaces as { name: string; uid: number }[];
    expect(mine.uid).toBe(ns.find((n) => n.name === 'team-a')!.uid);
    expect(theirs.uid).toBe(ns.find((n) => n.name === 'team-b')!.uid);
    expect(mine.uid).toBeGreaterThanOrEqual(100000);
    expect(mine.uid).not.toBe(theirs.uid);
    expect(mine.uid).not.toBe(process.getuid!());
    expect(mine.groups).toEqual([mine.gid]);
    expect({ noNewPrivs: mine.noNewPrivs, capEff: mine.capEff, capBnd: mine.capBnd }).toEqual({ noNewPrivs: '1', capEff: '0000000000000000', capBnd: '0000000000000000' });
    record({ boundary, attack: 'app code checks who it runs as', expected: 'a uid of its namespace (≠ 0, ≠ the server, ≠ other namespaces), no capabilities, no new privileges', observed: `uid ${mine.uid} (team-b: ${theirs.uid}), CapEff ${mine.capEff}, NoNewPrivs ${mine.noNewPrivs}`, refused: true });
    const worker = (await server.molt(['worker', 'list', '--app', 'prober', '-n', 'team-a'])).stdout;
    expect(worker).not.toContain('NOT ISOLATED');
    const get = await server.molt(['app', 'get', '--app', 'prober', '-n', 'team-a']);
    expect(get.stdout).toMatch(new RegExp(`isolation: +sandboxed, uid ${mine.uid}`));
    expect(mine.env).not.toContain('MOLT_SERVER_SECRET');
    record({ boundary, attack: "app code reads the server's environment", expected: 'only its own env and MOLT_*', observed: `MOLT_SERVER_SECRET ${mine.env.includes('MOLT_SERVER_SECRET') ? 'visible' : 'absent'}`, refused: !mine.env.includes('MOLT_SERVER_SECRET') });
  });

  it('sees only its own processes and cannot signal the server or other workers', async () => {
    const procs = await attacker({ op: 'list', path: '/proc' });
    const pids = String((procs as { value: string }).value).split(',').filter((p) => /^\d+$/.test(p));
    expect(pids).toEqual(['1']);
    record({ boundary, attack: 'app code lists /proc', expected: 'only itself (PID 1 of its namespace)', observed: `pids: ${pids.join(',')}`, refused: pids.length === 1 });
    const victimPid = (await workersOf('team-b', 'victim'))[0]!.pid;
    for (const [what, pid] of [
      ['the molt server', server.child.pid!],
      ["another namespace's worker", victimPid],
    ] as const) {
      const r = await attacker({ op: 'kill', pid, signal: 'SIGKILL' });
      expect(r).toEqual({ ok: false, code: 'ESRCH' });
      record({ boundary, attack: `app code sends SIGKILL to ${what} (host pid)`, expected: 'ESRCH: no such process in its namespace', observed: refusedWith(r), refused: !r.ok });
    }
    await attacker({ op: 'kill', pid: -1, signal: 'SIGKILL' });
    expect(server.child.exitCode).toBeNull();
    expect((await workersOf('team-b', 'victim'))[0]!.pid).toBe(victimPid);
    expect(await probe('victim', 'team-b', { op: 'read', path: '/molt/volumes/secrets/key.txt' })).toMatchObject({ ok: true });
    record({ boundary, attack: 'app code sends SIGKILL to every process it can (kill -1)', expected: 'the server and other workers keep running', observed: `server running, victim pid ${victimPid} unchanged`, refused: true });
  });

  it('cannot reach another worker behind the gateway, nor the host but by the network', async () => {
    const victim = (await workersOf('team-b', 'victim'))[0]!;
    const socket = await attacker({ op: 'connect', path: join(server.dataDir, 'run', victim.id, 'http.sock') });
    expect(socket).toEqual({ ok: false, code: 'ENOENT' });
    record({ boundary, attack: "app code connects to another worker's socket, bypassing the gateway's token check", expected: 'ENOENT: no worker listens on the network', observed: refusedWith(socket), refused: !socket.ok });
    const shadow = await attacker({ op: 'read', path: '/etc/shadow' });
    expect(shadow.ok).toBe(false);
    const passwd = await attacker({ op: 'read', path: '/etc/passwd' });
    expect(String((passwd as { value: string }).value).trim().split('\n')).toHaveLength(1);
    record({ boundary, attack: "app code reads the host's /etc/shadow and /etc/passwd", expected: 'shadow absent; passwd names only its own user', observed: `shadow: ${refusedWith(shadow)}; passwd: ${String((passwd as { value: string }).value).trim().split('\n').length} line`, refused: !shadow.ok });
    // Outbound network stays open: apps call other services.
    expect(await attacker({ op: 'fetch', url: outsideUrl })).toEqual({ ok: true, value: 'reached the outside' });
  });

  it('has a private, size-limited scratch dir (TMPDIR) and a private /tmp, gone with the worker', async () => {
    const info = JSON.parse((await attacker({ op: 'info' }) as { value: string }).value);
    expect({ scratch: info.scratch, tmpdir: info.tmpdir, home: info.home, cwd: info.cwd }).toEqual({ scratch: '/molt/scratch', tmpdir: '/molt/scratch', home: '/molt/scratch', cwd: '/app' });
    expect(await attacker({ op: 'fill', path: '/molt/scratch/ok.bin', mb: 2 })).toEqual({ ok: true, value: String(2 * 1024 * 1024) });
    const full = await attacker({ op: 'fill', path: '/molt/scratch/big.bin', mb: 64 });
    expect(full).toEqual({ ok: false, code: 'ENOSPC' });
    record({ boundary, attack: 'app code fills its scratch dir past its size (--scratch-mb 8)', expected: 'ENOSPC', observed: refusedWith(full), refused: !full.ok });
    const [one, two] = await workersOf('team-a', 'prober');
    expect(JSON.parse(await server.callWorker(one!, '/probe', { op: 'write', path: '/tmp/marker', data: 'one' }))).toEqual({ ok: true, value: null });
    const other = JSON.parse(await server.callWorker(two!, '/probe', { op: 'read', path: '/tmp/marker' }));
    expect(other).toEqual({ ok: false, code: 'ENOENT' });
    record({ boundary, attack: "app code reads another worker's /tmp", expected: 'ENOENT: each worker has its own', observed: refusedWith(other), refused: !other.ok });
    // Scale to one worker: the stopped worker's run dir (its socket) is gone, its tmpfs with it.
    const dir = probeApp(join(tempDir(), 'prober'), 'prober', { config: { workers: 1 } });
    expect((await server.molt(['app', 'update', '-n', 'team-a'], { cwd: dir, token: teamA })).code).toBe(0);
    await waitFor(async () => (await workersOf('team-a', 'prober')).length === 1, 15_000, 'one worker');
    const left = (await workersOf('team-a', 'prober'))[0]!.id;
    const stopped = left === one!.id ? two! : one!;
    await waitFor(() => !existsSync(join(server.dataDir, 'run', stopped.id)) || undefined, 10_000, 'its run dir to go');
  });
});

describe('where workers cannot be isolated, molt says so, and refuses when asked to', () => {
  it('runs unsandboxed workers with --no-isolation and says NOT ISOLATED in worker list, app get and node list', async () => {
    const server = new ServerProcess(tempDir(), ['--no-isolation']);
    await server.start();
    try {
      const dir = probeApp(join(tempDir(), 'plain'), 'plain');
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const why = 'NOT ISOLATED: sandboxing is off (molt server --no-isolation)';
      const list = await server.molt(['worker', 'list', '--app', 'plain']);
      expect(list.stdout).toMatch(/ISOLATION/);
      expect(list.stdout).toContain(why);
      expect((await server.molt(['app', 'get', '--app', 'plain'])).stdout).toContain(`isolation:  ${why}`);
      expect((await server.molt(['node', 'list'])).stdout).toContain(why);
      record({ boundary, attack: 'workers run where sandboxing is off', expected: 'worker list, app get and node list say NOT ISOLATED and why', observed: why, refused: true });
    } finally {
      await server.stop();
    }
  });

  it('sandboxes workers as molt\'s own user when molt does not run as root, and says they are not isolated', async () => {
    const nobody = 65534;
    const server = new ServerProcess(tempDir(), [], {}, nobody);
    await server.start();
    try {
      const dir = probeApp(join(tempDir(), 'plain'), 'plain');
      expect((await server.molt(['app', 'create'], { cwd: dir })).code).toBe(0);
      const isolation = (await server.api('GET', '/api/v1/namespaces/default/apps/plain')).body.app.isolation as string[];
      expect(isolation).toHaveLength(1);
      expect(isolation[0]).toMatch(/^NOT ISOLATED: (workers are sandboxed but run as molt's own user \(uid 65534\)|molt does not run as root and bubblewrap cannot make user namespaces)/);
      const probe = async (body: Record<string, unknown>) =>
        (await (await fetch(server.route('default', 'plain', '/probe'), { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}` }, body: JSON.stringify(body) })).json()) as { ok: boolean; code?: string; value?: string };
      const info = JSON.parse((await probe({ op: 'info' })).value!);
      expect(info.uid).toBe(nobody);
      // Where user namespaces allow the sandbox, the data dir is out of reach all the same.
      const token = await probe({ op: 'read', path: join(server.dataDir, 'admin-token') });
      if (isolation[0]!.includes('sandboxed')) expect(token).toEqual({ ok: false, code: 'ENOENT' });
      record({ boundary, attack: 'workers of a molt that does not run as root', expected: 'NOT ISOLATED said; sandboxed as molt\'s user where user namespaces allow it', observed: `${isolation[0]!.slice(0, 70)}…; admin token: ${token.ok ? 'readable' : token.code}`, refused: !token.ok });
    } finally {
      await server.stop();
    }
  });

  it('molt server --require-isolation refuses to start where workers cannot be sandboxed, naming why', async () => {
    for (const [args, env, why] of [
      [['--no-isolation'], {}, 'sandboxing is off'],
      [[], { PATH: '/nonexistent' }, 'bubblewrap is not installed'],
    ] as const) {
      const server = new ServerProcess(tempDir(), ['--require-isolation', ...args], env);
      const error = await server.start().then(
        () => undefined,
        (err: Error) => err.message,
      );
      await server.stop();
      expect(error).toContain('--require-isolation: workers cannot be isolated here');
      expect(error).toContain(why);
      expect(server.child.exitCode).toBe(1);
      record({ boundary, attack: `molt server --require-isolation where ${why}`, expected: 'exits 1 naming why, starts no worker', observed: `exit ${server.child.exitCode}: ${why}`, refused: true });
    }
  });
});
