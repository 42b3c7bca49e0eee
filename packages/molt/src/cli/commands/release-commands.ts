import type { Command } from 'commander';
import { dirname, resolve } from 'node:path';
import type { ReleaseRow } from '../../store/types.js';
import { Client } from '../client.js';
import { namespaceOf, sourceOptions } from '../context.js';
import { describeWork, pushRelease } from '../deploy.js';
import { writeTreeFile } from '../upload.js';
import { printJson, run, say } from '../output.js';
import { stamp, table } from '../table.js';
import { describeUpgrade, planFile, serverSide } from '../plan-view.js';
import { MoltError } from '../../errors.js';
import type { AppSpec } from '../../config/app-spec.js';
import { mkdirSync, writeFileSync } from 'node:fs';

export function releaseCommands(program: Command): void {
  const release = program.command('release').description('build and list releases');
  sourceOptions(release.command('build'))
    .description('build a content-addressed release of the app in the current directory')
    .option('--push', 'upload it to the server (only the files it lacks)')
    .option('--out <file>', 'also write it as one release file (a tar archive), to upload in the dashboard or with POST /api/v1/namespaces/<ns>/releases')
    .option('-n, --namespace <ns>', 'namespace to push to')
    .option('--json', 'print the manifest as JSON')
    .action(
      run(async (opts: { dir: string; file?: string; push?: boolean; out?: string; namespace?: string; json?: boolean }) => {
        if (opts.push && opts.out) throw new MoltError('MOLT_ERR_BAD_REQUEST', 'give --push or --out, not both: --out writes a file to upload later');
        if (opts.push) {
          const { built } = await pushRelease(Client.fromProfile(), namespaceOf(opts), resolve(opts.dir), opts.file, say);
          if (opts.json) printJson({ id: built.id, manifest: built.manifest });
          else console.log(built.id);
          return;
        }
        const { buildRelease } = await import('../../release/build-release.js');
        const built = await buildRelease(resolve(opts.dir), { file: opts.file });
        if (opts.out) await writeTreeFile(built.dir, built.scanned, resolve(opts.out));
        if (opts.json) return printJson({ id: built.id, dir: built.dir, manifest: built.manifest, ...(opts.out ? { file: resolve(opts.out) } : {}) });
        console.log(`release ${built.id}`);
        console.log(`  app ${built.manifest.app} ${built.manifest.version}, node ${built.manifest.node}, ${built.manifest.modules.length} module(s), ${built.scanned.tree.entries.length} file(s)`);
        console.log(`  ${describeWork(built)}`);
        console.log(`  in ${built.dir}`);
        if (opts.out) console.log(`  written to ${resolve(opts.out)}`);
      }),
    );
  sourceOptions(release.command('plan'))
    .description('show the in-place upgrade plan from the running release to this build (or between two releases)')
    .option('--app <name>', 'app name (default: the app config in the directory)')
    .option('-n, --namespace <ns>', 'namespace')
    .option('--from <release>', 'release to upgrade from (default: the one the app runs)')
    .option('--to <release>', 'release to upgrade to (default: a build of the app directory)')
    .option('--write', 'write the plan to rel/plans/<from>-<to>.json, where `molt app update` will use it')
    .option('--json', 'print the plan as JSON')
    .action(
      run(async (opts: { dir: string; file?: string; app?: string; namespace?: string; from?: string; to?: string; write?: boolean; json?: boolean }) => {
        const client = Client.fromProfile();
        const namespace = namespaceOf(opts);
        const dir = resolve(opts.dir);
        const { generatePlan } = await import('../../release/upgrade-plan.js');
        const { loadAppConfig } = await import('../../config/load-config.js');
        const name = opts.app ?? (await loadAppConfig(dir, opts.file)).spec.name;
        const { app } = await client.request<{ app: { release: string | null; spec: AppSpec | null } }>('GET', `/api/v1/namespaces/${namespace}/apps/${name}`);
        const fromId = opts.from ?? app.release;
        if (!fromId || !app.spec) throw new MoltError('MOLT_ERR_BAD_REQUEST', `app ${name} runs no release yet; pass --from`);
        const from = await serverSide(client, namespace, fromId, app.spec);
        const to = opts.to ? await serverSide(client, namespace, opts.to, app.spec) : await (await import('../../release/build-release.js')).buildRelease(dir, { file: opts.file });
        const plan = generatePlan(from, to);
        if (opts.json) printJson(plan);
        else for (const line of describeUpgrade(plan)) console.log(line);
        if (opts.write) {
          const file = planFile(dir, from.id, to.id);
          mkdirSync(dirname(file), { recursive: true });
          writeFileSync(file, `${JSON.stringify({ from: from.id, to: to.id, up: plan.up, down: plan.down }, null, 2)}\n`);
          say(`wrote ${file}; edit it if you need to, \`molt app update\` uses it for this pair of releases`);
        }
      }),
    );
  release
    .command('list')
    .description('list the releases of a namespace')
    .option('-n, --namespace <ns>', 'namespace')
    .option('--app <name>', 'only releases of this app')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: { namespace?: string; app?: string; json?: boolean }) => {
        const q = opts.app ? `?app=${encodeURIComponent(opts.app)}` : '';
        const { releases } = await Client.fromProfile().request<{ releases: ReleaseRow[] }>('GET', `/api/v1/namespaces/${namespaceOf(opts)}/releases${q}`);
        if (opts.json) return printJson(releases);
        console.log(table(['ID', 'APP', 'VERSION', 'NODE', 'MODULES', 'FILES', 'SIZE', 'CREATED_AT'], releases.map((r) => [r.id.slice(0, 12), r.app, r.manifest.version, r.manifest.node, r.manifest.modules.length, r.files, `${r.size} B`, stamp(r.createdAt)])));
      }),
    );
  release
    .command('delete <id>')
    .description('delete a release no app runs or is rolling to (frees room in the namespace\'s release quota)')
    .option('-n, --namespace <ns>', 'namespace')
    .action(
      run(async (id: string, opts: { namespace?: string }) => {
        const { deleted } = await Client.fromProfile().request<{ deleted: string }>('DELETE', `/api/v1/namespaces/${namespaceOf(opts)}/releases/${encodeURIComponent(id)}`);
        console.log(`release ${deleted.slice(0, 12)} deleted`);
      }),
    );
}
