import type { Command } from 'commander';
import type { NamespaceUsage } from '../../control-plane/quotas.js';
import { MoltError } from '../../errors.js';
import type { NamespaceQuota, NamespaceRow } from '../../store/types.js';
import { Client } from '../client.js';
import { printJson, run } from '../output.js';
import { stamp, table } from '../table.js';

type NamespaceView = NamespaceRow & { usage: NamespaceUsage; uid: number | null };

/** The quota flags, each with the field it sets and whether it takes fractions. */
const QUOTA_FLAGS: { flag: string; field: keyof NamespaceQuota; option: string; fraction?: boolean; what: string }[] = [
  { flag: '--workers <n>', option: 'workers', field: 'workers', what: 'workers of all its apps, a rolling update\'s surge included' },
  { flag: '--cpu <n>', option: 'cpu', field: 'cpu', fraction: true, what: 'CPU cores its workers request in all' },
  { flag: '--memory-mb <n>', option: 'memoryMb', field: 'memoryMb', what: 'MiB of memory its workers request in all' },
  { flag: '--gpus <n>', option: 'gpus', field: 'gpus', what: 'GPUs its workers request in all' },
  { flag: '--volume-bytes <n>', option: 'volumeBytes', field: 'volumeBytes', what: 'bytes its volumes\' revisions hold' },
  { flag: '--releases <n>', option: 'releases', field: 'releases', what: 'releases it keeps' },
];

/** `held/limit`, or just what is held when there is no limit. */
const used = (held: number, limit: number | undefined) => (limit === undefined ? `${held}` : `${held}/${limit}`);

function quotaRows(namespaces: NamespaceView[]): string {
  return table(
    ['NAME', 'WORKERS', 'CPU', 'MEMORY_MB', 'GPUS', 'VOLUME_BYTES', 'RELEASES', 'UID', 'CREATED_AT'],
    namespaces.map((n) => {
      const q = n.quota ?? {};
      const u = n.usage;
      return [n.name, used(u.workers, q.workers), used(u.cpu, q.cpu), used(u.memoryMb, q.memoryMb), used(u.gpus, q.gpus), used(u.volumeBytes, q.volumeBytes), used(u.releases, q.releases), n.uid, stamp(n.createdAt)];
    }),
  );
}

/** A quota value from the command line: a number, or `none` to remove that limit. */
function parseValue(text: string, flag: string, fraction: boolean): number | null {
  if (text === 'none') return null;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0 || (!fraction && !Number.isInteger(n))) {
    throw new MoltError('MOLT_ERR_BAD_REQUEST', `${flag.split(' ')[0]} must be ${fraction ? 'a number' : 'a whole number'} of at least 0, or none to remove the limit (got ${JSON.stringify(text)})`);
  }
  return n;
}

export function namespaceCommands(program: Command): void {
  const ns = program.command('namespace').description('manage namespaces and their quotas');
  ns.command('create <name>')
    .description('create a namespace (server admin)')
    .action(
      run(async (name: string) => {
        await Client.fromProfile().request('POST', '/api/v1/namespaces', { name });
        console.log(`namespace ${name} created`);
      }),
    );
  ns.command('list')
    .description('list namespaces with what they hold and their quotas (held/limit)')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: { json?: boolean }) => {
        const { namespaces } = await Client.fromProfile().request<{ namespaces: NamespaceView[] }>('GET', '/api/v1/namespaces');
        if (opts.json) return printJson(namespaces);
        console.log(quotaRows(namespaces));
      }),
    );
  const quota = ns
    .command('quota <name>')
    .description('set a namespace\'s quotas (server admin); an update that would pass one is refused up front. `none` removes a limit')
    .option('--clear', 'remove every limit')
    .option('--json', 'print JSON');
  for (const f of QUOTA_FLAGS) quota.option(f.flag, `most ${f.what}`);
  quota.action(
    run(async (name: string, opts: Record<string, string | boolean | undefined>) => {
      const body: Record<string, number | null> = {};
      for (const f of QUOTA_FLAGS) {
        const value = opts[f.option];
        if (typeof value === 'string') body[f.field] = parseValue(value, f.flag, f.fraction === true);
      }
      if (opts.clear) for (const f of QUOTA_FLAGS) body[f.field] = null;
      if (Object.keys(body).length === 0) {
        throw new MoltError('MOLT_ERR_BAD_REQUEST', `give at least one limit, e.g. \`molt namespace quota ${name} --workers 8 --memory-mb 4096\`, or --clear`);
      }
      const { namespace } = await Client.fromProfile().request<{ namespace: NamespaceView }>('PUT', `/api/v1/namespaces/${encodeURIComponent(name)}/quota`, body);
      if (opts.json) return printJson(namespace);
      console.log(`namespace ${name}: quota set (held/limit)`);
      console.log(quotaRows([namespace]));
    }),
  );
}
