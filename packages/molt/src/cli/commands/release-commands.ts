import type { Command } from 'commander';
import { resolve } from 'node:path';
import type { ReleaseRow } from '../../store/types.js';
import { Client } from '../client.js';
import { namespaceOf } from '../context.js';
import { pushRelease } from '../deploy.js';
import { printJson, run, say } from '../output.js';
import { stamp, table } from '../table.js';

export function releaseCommands(program: Command): void {
  const release = program.command('release').description('build and list releases');
  release
    .command('build')
    .description('build a content-addressed release of the app in the current directory')
    .option('--dir <dir>', 'app directory', '.')
    .option('--file <manifest>', 'a YAML or JSON manifest instead of molt.config.ts')
    .option('--push', 'upload it to the server (only the files it lacks)')
    .option('-n, --namespace <ns>', 'namespace to push to')
    .option('--json', 'print the manifest as JSON')
    .action(
      run(async (opts: { dir: string; file?: string; push?: boolean; namespace?: string; json?: boolean }) => {
        if (opts.push) {
          const { built } = await pushRelease(Client.fromProfile(), namespaceOf(opts), resolve(opts.dir), opts.file, say);
          if (opts.json) printJson({ id: built.id, manifest: built.manifest });
          else console.log(built.id);
          return;
        }
        const { buildRelease } = await import('../../release/build-release.js');
        const built = await buildRelease(resolve(opts.dir), { file: opts.file });
        if (opts.json) return printJson({ id: built.id, dir: built.dir, manifest: built.manifest });
        console.log(`release ${built.id}`);
        console.log(`  app ${built.manifest.app} ${built.manifest.version}, node ${built.manifest.node}, ${built.manifest.modules.length} module(s), ${built.scanned.tree.entries.length} file(s)`);
        console.log(`  in ${built.dir}`);
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
}
