import type { Command } from 'commander';
import { resolve } from 'node:path';
import type { UpdateResult } from '../../control-plane/app-service.js';
import type { LogLine } from '../../control-plane/log-hub.js';
import type { RevisionRow, WorkerRow } from '../../store/types.js';
import { Client } from '../client.js';
import { type AppOptions, appTarget, namespaceOf, sourceOptions } from '../context.js';
import { followRollout, pushRelease } from '../deploy.js';
import { printJson, run, say } from '../output.js';
import { stamp, table } from '../table.js';
import { describeUpgrade } from '../plan-view.js';
import { MoltError } from '../../errors.js';
import type { AppSpec } from '../../config/app-spec.js';

type AppCmdOptions = AppOptions & { json?: boolean };

interface NodeView {
  name: string;
  cpu: number;
  memoryMb: number;
  used: { cpu: number; memoryMb: number };
  workers: number;
  gpus: { index: number; name: string; memoryMb: number; usedBy: string | null }[];
  gpuSource: string;
  limits: string;
  isolation: string;
}

const appOptions = (c: Command) =>
  c.option('--app <name>', 'app name (default: the app config in the current directory)').option('-n, --namespace <ns>', 'namespace');

/** Follows a rollout to its end; returns the exit code (1 when it failed). */
async function finish(client: Client, namespace: string, result: UpdateResult): Promise<number> {
  if (!result.rollout) return 0;
  const final = await followRollout(client, namespace, result.app, result.rollout.id, say);
  if (final?.type === 'rollout.succeeded') return 0;
  const from = result.rollout.fromRevision;
  const serving = from > 0 ? `revision ${from} keeps serving` : `${result.app} has no revision that serves yet; fix the error above, then \`molt app update\``;
  say(`update of ${result.app} failed; ${serving}. See \`molt app history --app ${result.app}\` and \`molt app logs --app ${result.app}\``);
  return 1;
}

function describeResources(r: { cpu?: number; memoryMb?: number; gpu?: number; gpuConstraints?: string[] }): string {
  const parts: string[] = [];
  if (r.cpu) parts.push(`cpu ${r.cpu}`);
  if (r.memoryMb) parts.push(`memory ${r.memoryMb} MiB`);
  if (r.gpu) parts.push(`${r.gpu} GPU${r.gpu > 1 ? 's' : ''}${r.gpuConstraints?.length ? ` (${r.gpuConstraints.join(' or ')})` : ''}`);
  return parts.join(', ') || 'none requested';
}

function describePlan(r: UpdateResult): string[] {
  if (r.strategy === 'none') return [`nothing changed: app ${r.app}: ${r.reason}`];
  const lines = r.changes.map((c) => {
    if (c.field === 'code') return `  code: release ${String(c.from ?? 'none').slice(0, 12)} → ${String(c.to).slice(0, 12)}`;
    return `  ${c.field}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`;
  });
  const upgrade = r.upgrade && (r.strategy === 'hot' || r.dryRun) ? ['upgrade plan:', ...describeUpgrade(r.upgrade).map((l) => `  ${l}`)] : [];
  return ['changes:', ...lines, `strategy: ${r.strategy} (${r.reason})`, ...upgrade];
}

/**
 * The refusals an update can get without a build: a token without the deployer right in the
 * namespace, an app that does not exist, an immutable app.
 */
async function preflightUpdate(client: Client, t: { namespace: string; app: string }): Promise<void> {
  const me = await client.request<{ namespace: string; role: string }>('GET', '/api/v1/whoami');
  if ((me.namespace !== '*' && me.namespace !== t.namespace) || me.role === 'invoker') {
    const why = me.role === 'invoker' ? `this invoker token cannot deploy and change apps in namespace ${t.namespace}: that needs the deployer role` : `this token belongs to namespace ${me.namespace} and has no rights in namespace ${t.namespace}`;
    throw new MoltError('MOLT_ERR_FORBIDDEN', `${why}; nothing was built or uploaded`);
  }
  const { app } = await client.request<{ app: { immutable: boolean } }>('GET', `/api/v1/namespaces/${t.namespace}/apps/${t.app}`);
  if (app.immutable) {
    throw new MoltError(
      'MOLT_ERR_APP_IMMUTABLE',
      `app ${t.namespace}/${t.app} is immutable (created with --immutable or updatable: false) and cannot be updated; nothing was built: delete it and create it again: \`molt app delete --app ${t.app}\` then \`molt app create\``,
    );
  }
}

/** Builds and uploads the app of `--dir`/`--file` to the profile's server: the first step of create and update. */
async function pushFromOptions(opts: AppCmdOptions) {
  const client = Client.fromProfile();
  const namespace = namespaceOf(opts);
  const pushed = await pushRelease(client, namespace, resolve(opts.dir ?? '.'), opts.file, say);
  return { client, namespace, ...pushed };
}

export function appCommands(program: Command): void {
  const app = program.command('app').description('deploy and manage apps');

  sourceOptions(appOptions(app.command('create')))
    .description('build the app in the current directory, upload it and deploy it')
    .option('--immutable', 'refuse every later update of this app')
    .option('--no-wait', 'return once the deploy has started')
    .action(
      run(async (opts: AppCmdOptions & { immutable?: boolean; wait: boolean }) => {
        const { client, namespace, built, release } = await pushFromOptions(opts);
        const result = await client.request<UpdateResult>('POST', `/api/v1/namespaces/${namespace}/apps`, { config: built.spec, releaseId: release.id, immutable: opts.immutable === true });
        say(`app ${result.app} created (revision ${result.revision}${opts.immutable ? ', immutable' : ''})`);
        if (!opts.wait) return 0;
        const code = await finish(client, namespace, result);
        if (code === 0) say(`route: ${client.server}/api/routes/v1/${namespace}/${result.app}/`);
        return code;
      }),
    );

  sourceOptions(app.command('prepare'))
    .description("get the app's volumes ready: create missing ones, push local changes (from `molt volume get` paths)")
    .option('-n, --namespace <ns>', 'namespace')
    .action(
      run(async (opts: AppCmdOptions) => {
        const { prepareVolumes } = await import('./volume-commands.js');
        for (const line of await prepareVolumes(Client.fromProfile(), namespaceOf(opts), resolve(opts.dir ?? '.'), opts.file)) console.log(line);
      }),
    );

  sourceOptions(appOptions(app.command('update')))
    .description('deploy the current code and config of the app: a new revision, rolled out worker by worker')
    .option('--dry-run', 'print what would change and how, change nothing')
    .option('--strategy <strategy>', 'hot (in place) or rolling (new workers); default: hot when it is safe')
    .option('--retry', 'try a release whose hot upgrade failed again')
    .option('--json', 'print the plan as JSON')
    .option('--no-wait', 'return once the update has started')
    .action(
      run(async (opts: AppCmdOptions & { dryRun?: boolean; wait: boolean; strategy?: string; retry?: boolean }) => {
        if (opts.strategy && !['hot', 'rolling'].includes(opts.strategy)) throw new MoltError('MOLT_ERR_BAD_REQUEST', `--strategy must be hot or rolling (got ${opts.strategy})`);
        // What can be refused without a build is refused before it.
        await preflightUpdate(Client.fromProfile(), await appTarget(opts));
        const { client, namespace, built, release } = await pushFromOptions(opts);
        const name = opts.app ?? built.spec.name;
        // A plan reviewed and written with `molt release plan --write` is used instead of the generated one.
        const { app: running } = await client.request<{ app: { release: string | null; spec: AppSpec } }>('GET', `/api/v1/namespaces/${namespace}/apps/${name}`);
        const { readPlanFile, serverSide, transformedPlan } = await import('../plan-view.js');
        const dir = resolve(opts.dir ?? '.');
        const from = running.release;
        const plan = from
          ? (readPlanFile(dir, from, release.id) ?? (await transformedPlan(dir, opts.file, () => serverSide(client, namespace, from, running.spec), built)))
          : undefined;
        const result = await client.request<UpdateResult>('POST', `/api/v1/namespaces/${namespace}/apps/${name}/update`, {
          config: built.spec,
          releaseId: release.id,
          dryRun: opts.dryRun === true,
          ...(opts.strategy ? { strategy: opts.strategy } : {}),
          ...(plan ? { plan } : {}),
          ...(opts.retry ? { retry: true } : {}),
        });
        if (opts.json) printJson(result);
        else for (const line of describePlan(result)) console.log(line);
        if (opts.dryRun) {
          if (!opts.json) console.log('dry run: nothing was changed');
          return 0;
        }
        if (result.revision) say(`revision ${result.revision} is ${result.strategy === 'hot' ? 'being upgraded in place' : 'rolling out'}`);
        return opts.wait ? finish(client, namespace, result) : 0;
      }),
    );

  sourceOptions(appOptions(app.command('rollback')))
    .description('go back to an earlier revision (default: the one before the current), worker by worker')
    .option('--to <revision>', 'revision number from `molt app history`')
    .option('--no-wait', 'return once the rollback has started')
    .action(
      run(async (opts: AppCmdOptions & { to?: string; wait: boolean }) => {
        const client = Client.fromProfile();
        const t = await appTarget(opts);
        const result = await client.request<UpdateResult>('POST', `/api/v1/namespaces/${t.namespace}/apps/${t.app}/rollback`, opts.to ? { to: Number(opts.to) } : {});
        say(`rolling back ${t.app} as revision ${result.revision}: ${result.strategy === "hot" ? "in place (down plan)" : "worker by worker"}`);
        return opts.wait ? finish(client, t.namespace, result) : 0;
      }),
    );

  appOptions(app.command('get'))
    .description('show an app')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: AppCmdOptions) => {
        const t = await appTarget(opts);
        const { app: a } = await Client.fromProfile().request<{ app: Record<string, any> }>('GET', `/api/v1/namespaces/${t.namespace}/apps/${t.app}`);
        if (opts.json) return printJson(a);
        console.log(
          [
            `name:       ${a.name}`,
            `namespace:  ${a.namespace}`,
            `id:         ${a.id}`,
            `revision:   ${a.currentRevision || 'none serves yet'}${a.permanentRevision ? ` (on probation; permanent: ${a.permanentRevision})` : ''}${a.rolloutId ? ` (rollout ${a.rolloutId} in progress)` : ''}`,
            `release:    ${a.release ? String(a.release).slice(0, 12) : '-'}`,
            `workers:    ${a.workers.running} running of ${a.spec?.workers ?? '?'} wanted`,
            `status:     ${a.paused ? 'paused' : a.currentRevision ? 'active' : a.rolloutId ? 'deploying' : 'failed: its first deploy did not succeed (see `molt app history`)'}${a.immutable ? ', immutable' : ''}`,
            `public:     ${a.spec?.public ? 'yes' : 'no (token required)'}`,
            `resources:  ${describeResources(a.spec?.resources ?? {})}`,
            ...(a.limits as string[]).map((l) => `limits:     ${l}`),
            ...(a.isolation as string[]).map((l) => `isolation:  ${l}`),
            `volumes:    ${(a.volumes as { ref: string; revision: string; useLatest: boolean }[]).map((v) => `${v.ref}@${v.revision}${v.useLatest ? '' : ' (pinned)'}`).join(', ') || 'none'}`,
            `route:      ${a.route}`,
          ].join('\n'),
        );
      }),
    );

  app
    .command('list')
    .description('list apps')
    .option('-n, --namespace <ns>', 'namespace')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: { namespace?: string; json?: boolean }) => {
        const namespace = namespaceOf(opts);
        const { apps } = await Client.fromProfile().request<{ apps: Record<string, any>[] }>('GET', `/api/v1/namespaces/${namespace}/apps`);
        if (opts.json) return printJson(apps);
        console.log(
          table(
            ['NAME', 'REVISION', 'WORKERS', 'STATUS', 'CREATED_AT'],
            apps.map((a) => [a.name, a.currentRevision, `${a.workers.running}/${a.spec?.workers ?? '?'}`, a.rolloutId ? 'UPDATING' : a.paused ? 'PAUSED' : 'ACTIVE', stamp(a.createdAt)]),
          ),
        );
      }),
    );

  for (const verb of ['pause', 'resume'] as const) {
    appOptions(app.command(verb))
      .description(verb === 'pause' ? 'stop all workers; routes answer 503 until resumed' : 'start the workers of a paused app')
      .action(
        run(async (opts: AppCmdOptions) => {
          const t = await appTarget(opts);
          await Client.fromProfile().request('POST', `/api/v1/namespaces/${t.namespace}/apps/${t.app}/${verb}`);
          console.log(`app ${t.app} ${verb === 'pause' ? 'paused' : 'resumed'}`);
        }),
      );
  }

  appOptions(app.command('delete'))
    .description('stop and delete an app with its history')
    .action(
      run(async (opts: AppCmdOptions) => {
        const t = await appTarget(opts);
        await Client.fromProfile().request('DELETE', `/api/v1/namespaces/${t.namespace}/apps/${t.app}`);
        console.log(`app ${t.app} deleted`);
      }),
    );

  appOptions(app.command('history'))
    .description('list the revisions of an app')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: AppCmdOptions) => {
        const t = await appTarget(opts);
        const { current, revisions } = await Client.fromProfile().request<{ current: number; revisions: RevisionRow[] }>('GET', `/api/v1/namespaces/${t.namespace}/apps/${t.app}/history`);
        if (opts.json) return printJson({ current, revisions });
        console.log(
          table(
            ['REVISION', 'STATUS', 'RELEASE', 'WORKERS', 'CAUSE', 'CREATED_AT', 'REASON'],
            revisions.map((r) => [`${r.revision}${r.revision === current ? '*' : ''}`, r.status.toUpperCase(), r.releaseId.slice(0, 12), r.spec.workers, r.cause, stamp(r.createdAt), r.reason]),
          ),
        );
      }),
    );

  appOptions(app.command('logs'))
    .description("print the app's worker output")
    .option('-f, --follow', 'keep printing new lines')
    .option('--worker <id>', 'only this worker')
    .option('--tail <n>', 'only the last n lines')
    .action(
      run(async (opts: AppCmdOptions & { follow?: boolean; worker?: string; tail?: string }) => {
        const t = await appTarget(opts);
        const q = new URLSearchParams();
        if (opts.follow) q.set('follow', '1');
        if (opts.worker) q.set('worker', opts.worker);
        if (opts.tail) q.set('tail', opts.tail);
        await Client.fromProfile().stream<LogLine>(`/api/v1/namespaces/${t.namespace}/apps/${t.app}/logs?${q}`, (l) => {
          process.stdout.write(`${l.ts} ${l.workerId}${l.stream === 'stdout' ? '' : ` [${l.stream}]`} ${l.line}\n`);
        });
      }),
    );

  sourceOptions(app.command('run'))
    .description('run the app in the current directory locally, without a server; on a file change it hot-swaps when it can, else restarts')
    .option('-p, --port <port>', 'port to listen on', '8080')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--no-watch', 'do not watch for file changes')
    .action(
      run(async (opts: { dir: string; file?: string; port: string; host: string; watch: boolean }) => {
        const code = await (await import('./app-run.js')).runLocally(opts);
        // The build service (esbuild) would keep the process alive after Ctrl-C.
        process.exit(code);
      }),
    );

  const node = program.command('node').description('inspect the nodes that run workers');
  const listNodes = run(async (opts: { json?: boolean }) => {
    const { nodes } = await Client.fromProfile().request<{ nodes: NodeView[] }>('GET', '/api/v1/nodes');
    if (opts.json) return printJson(nodes);
    console.log(
      table(
        ['NAME', 'CPU (USED/TOTAL)', 'MEMORY (USED/TOTAL)', 'WORKERS', 'GPUS', 'LIMITS', 'ISOLATION'],
        nodes.map((n) => [n.name, `${n.used.cpu}/${n.cpu}`, `${n.used.memoryMb}/${n.memoryMb} MiB`, n.workers, n.gpus.length ? `${n.gpus.length}` : `0 (${n.gpuSource})`, n.limits, n.isolation]),
      ),
    );
    for (const n of nodes) {
      if (n.gpus.length === 0) continue;
      console.log(`\nGPUs of ${n.name}:`);
      console.log(table(['INDEX', 'MODEL', 'MEMORY', 'USED_BY'], n.gpus.map((g) => [g.index, g.name, `${g.memoryMb} MiB`, g.usedBy ?? 'free'])));
    }
  });
  node.command('list').description('capacity, use and GPUs per node').option('--json', 'print JSON').action(listNodes);
  program.command('resources').description('the same as `molt node list`').option('--json', 'print JSON').action(listNodes);

  const worker = program.command('worker').description('inspect workers');
  appOptions(worker.command('list'))
    .description("list an app's workers")
    .option('-a, --all', 'include terminated workers')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: AppCmdOptions & { all?: boolean }) => {
        const t = await appTarget(opts);
        const { workers } = await Client.fromProfile().request<{ workers: (WorkerRow & { release: string | null })[] }>('GET', `/api/v1/namespaces/${t.namespace}/apps/${t.app}/workers${opts.all ? '?all=1' : ''}`);
        if (opts.json) return printJson(workers);
        // LIMITS appears once a worker holds resources: what is enforced, or why not. ISOLATION
        // appears when a worker is not fully isolated, and says why.
        const withLimits = workers.some((w) => w.limits);
        const withIsolation = workers.some((w) => w.isolation?.startsWith('NOT ISOLATED'));
        const headers = ['ID', 'STATUS', 'DETAIL_STATUS', 'CREATED_AT', 'DELETED_AT', 'REVISION', 'RELEASE', ...(withLimits ? ['LIMITS'] : []), ...(withIsolation ? ['ISOLATION'] : []), 'DETAIL'];
        const rows = workers.map((w) => [
          w.id,
          w.status,
          w.detailStatus,
          stamp(w.createdAt),
          stamp(w.deletedAt),
          w.revision,
          w.release?.slice(0, 12),
          ...(withLimits ? [w.limits] : []),
          ...(withIsolation ? [w.isolation] : []),
          w.detail,
        ]);
        console.log(table(headers, rows));
      }),
    );
}
