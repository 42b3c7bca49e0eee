import type { Command } from 'commander';
import { resolve } from 'node:path';
import type { Tree } from '../../blobs/tree.js';
import type { VolumeGrantRow, VolumeRevisionRow, VolumeRow } from '../../store/types.js';
import { Client } from '../client.js';
import { namespaceOf } from '../context.js';
import { printJson, run, say } from '../output.js';
import { stamp, table } from '../table.js';

interface VolumeDetail {
  volume: VolumeRow;
  latest: VolumeRevisionRow | undefined;
  grants: VolumeGrantRow[];
  revisions: VolumeRevisionRow[];
}

type NsOpts = { namespace?: string; json?: boolean };

/** `NAME` in the namespace of `-n`, or `OWNER/NAME` for a volume shared with it. */
export function volumeTarget(ref: string, opts: { namespace?: string }): { namespace: string; name: string } {
  const slash = ref.indexOf('/');
  return slash < 0 ? { namespace: namespaceOf(opts), name: ref } : { namespace: ref.slice(0, slash), name: ref.slice(slash + 1) };
}

const volumePath = (t: { namespace: string; name: string }) => `/api/v1/namespaces/${t.namespace}/volumes/${t.name}`;

/** The seed's one-line form: `<Volume: id: …, name: …, revision: …, files: N, size: N B>`. */
export function describeVolume(v: VolumeRow, latest: VolumeRevisionRow | undefined): string {
  return `<Volume: id: ${v.id}, name: ${v.name}, revision: ${latest?.revision ?? '(none)'}, files: ${latest?.files ?? 0}, size: ${latest?.size ?? 0} B>`;
}

export async function fetchVolume(client: Client, t: { namespace: string; name: string }): Promise<VolumeDetail> {
  return client.request<VolumeDetail>('GET', volumePath(t));
}

export function volumeCommands(program: Command): void {
  const volume = program.command('volume').description('versioned volumes: files that apps read, pushed and pulled by revision');
  const ns = (c: Command) => c.option('-n, --namespace <ns>', 'namespace');

  ns(volume.command('create <name>'))
    .description('create an empty volume')
    .action(
      run(async (name: string, opts: NsOpts) => {
        const client = Client.fromProfile();
        const { volume: v } = await client.request<{ volume: VolumeRow }>('POST', `/api/v1/namespaces/${namespaceOf(opts)}/volumes`, { name });
        const { initEmpty } = await import('../volume-cache.js');
        console.log(describeVolume(v, undefined));
        console.log(`path: ${initEmpty(client, v)}`);
      }),
    );

  ns(volume.command('list'))
    .description('list the volumes of a namespace and those shared with it')
    .option('--json', 'print JSON')
    .action(
      run(async (opts: NsOpts) => {
        const { volumes } = await Client.fromProfile().request<{ volumes: (VolumeRow & { latest?: VolumeRevisionRow; shared?: string })[] }>('GET', `/api/v1/namespaces/${namespaceOf(opts)}/volumes`);
        if (opts.json) return printJson(volumes);
        const rows = volumes.map((v) => [v.shared ? `${v.namespace}/${v.name}` : v.name, v.id, v.latest?.revision ?? '(none)', v.latest?.files ?? 0, `${v.latest?.size ?? 0} B`, stamp(v.updatedAt), v.shared ?? 'owner']);
        console.log(table(['NAME', 'ID', 'REVISION', 'FILES', 'SIZE', 'UPDATED_AT', 'ACCESS'], rows));
      }),
    );

  ns(volume.command('get <name>'))
    .description('show a volume and the path of its local copy (made or brought up to date unless it has unpushed changes)')
    .option('--json', 'print JSON')
    .action(
      run(async (ref: string, opts: NsOpts) => {
        const client = Client.fromProfile();
        const detail = await fetchVolume(client, volumeTarget(ref, opts));
        const { volume: v, latest } = detail;
        const cache = await import('../volume-cache.js');
        const local = await cache.localChanges(v.id);
        let note: string | undefined;
        if (local?.changed) note = `local changes not pushed yet (based on revision ${local.state.revision || '(none)'}); \`molt app prepare\` or \`molt volume push ${ref}\` sends them`;
        else if (latest && local?.state.treeHash !== latest.treeHash) await cache.pull(client, v);
        else if (!latest) cache.initEmpty(client, v);
        if (opts.json) return printJson({ ...detail, path: cache.volumePath(v.id) });
        console.log(describeVolume(v, latest));
        console.log(`path: ${cache.volumePath(v.id)}`);
        if (note) say(note);
      }),
    );

  ns(volume.command('tree <name>'))
    .description('list the files of a revision (default: the latest)')
    .option('--revision <rev>', 'a revision such as 000001-08a')
    .option('--json', 'print JSON')
    .action(
      run(async (ref: string, opts: NsOpts & { revision?: string }) => {
        const query = opts.revision ? `?revision=${encodeURIComponent(opts.revision)}` : '';
        const res = await Client.fromProfile().request<{ revision: VolumeRevisionRow; tree: Tree }>('GET', `${volumePath(volumeTarget(ref, opts))}/tree${query}`);
        if (opts.json) return printJson(res);
        console.log(`revision ${res.revision.revision}: ${res.revision.files} file(s), ${res.revision.size} B`);
        const rows = res.tree.entries.map((e) => (e.type === 'file' ? [e.path, `${e.size} B`, e.hash.slice(0, 12)] : [`${e.path} -> ${e.target}`, '', 'link']));
        console.log(table(['PATH', 'SIZE', 'SHA256'], rows));
      }),
    );

  ns(volume.command('push <name> [dir]'))
    .description('push a directory (default: the local copy) as the next revision; only files the server lacks are sent')
    .option('--force', 'push even if someone else pushed since the local copy was pulled')
    .option('--json', 'print JSON')
    .action(
      run(async (ref: string, dir: string | undefined, opts: NsOpts & { force?: boolean }) => {
        const client = Client.fromProfile();
        const { volume: v } = await fetchVolume(client, volumeTarget(ref, opts));
        const { push } = await import('../volume-cache.js');
        const out = await push(client, v, dir === undefined ? undefined : resolve(dir), { force: opts.force });
        if (opts.json) return printJson(out);
        reportPush(v.name, out);
      }),
    );

  ns(volume.command('pull <name>'))
    .description('bring the local copy to a revision (default: the latest); only missing files are downloaded')
    .option('--revision <rev>', 'a revision such as 000001-08a')
    .option('--force', 'drop local changes that were not pushed')
    .action(
      run(async (ref: string, opts: NsOpts & { revision?: string; force?: boolean }) => {
        const client = Client.fromProfile();
        const { volume: v } = await fetchVolume(client, volumeTarget(ref, opts));
        const { pull } = await import('../volume-cache.js');
        const res = await pull(client, v, opts);
        console.log(`pulled revision ${res.revision.revision} (${res.downloaded} file(s) downloaded)`);
        console.log(`path: ${res.dir}`);
      }),
    );

  ns(volume.command('delete <name>'))
    .description('delete a volume and its revisions (refused while an app uses it)')
    .action(
      run(async (ref: string, opts: NsOpts) => {
        await Client.fromProfile().request('DELETE', volumePath(volumeTarget(ref, opts)));
        console.log(`volume ${ref} deleted`);
      }),
    );

  volume
    .command('grant <name>')
    .description('share a volume with another namespace: it may read and mount it, and with --write push to it')
    .requiredOption('--namespace <ns>', 'the namespace given access')
    .option('--write', 'allow pushes too')
    .option('--owner <ns>', "the volume's namespace (default: the profile's)")
    .action(
      run(async (name: string, opts: { namespace: string; write?: boolean; owner?: string }) => {
        const owner = opts.owner ?? namespaceOf({});
        await Client.fromProfile().request('POST', `${volumePath({ namespace: owner, name })}/grants`, { namespace: opts.namespace, write: opts.write === true });
        console.log(`volume ${owner}/${name} shared with namespace ${opts.namespace} (${opts.write ? 'read and write' : 'read'})`);
      }),
    );

  volume
    .command('revoke <name>')
    .description('stop sharing a volume with a namespace')
    .requiredOption('--namespace <ns>', 'the namespace whose access ends')
    .option('--owner <ns>', "the volume's namespace (default: the profile's)")
    .action(
      run(async (name: string, opts: { namespace: string; owner?: string }) => {
        const owner = opts.owner ?? namespaceOf({});
        await Client.fromProfile().request('DELETE', `${volumePath({ namespace: owner, name })}/grants/${opts.namespace}`);
        console.log(`volume ${owner}/${name} no longer shared with namespace ${opts.namespace}`);
      }),
    );
}

/** Prints what a push did. */
export function reportPush(name: string, out: { changed: boolean; revision: VolumeRevisionRow; sent: { files: number; bytes: number }; rolling: string[] }): void {
  if (!out.changed) {
    // Files can be sent without a change: the server had lost them (a corrupt blob it moved out).
    const sent = out.sent.files > 0 ? `; sent ${out.sent.files} file(s) the server lacked, ${out.sent.bytes} B` : '';
    console.log(`no changes: volume ${name} stays at revision ${out.revision.revision}${sent}`);
    return;
  }
  console.log(`volume ${name}: revision ${out.revision.revision} (${out.revision.files} file(s), ${out.revision.size} B); sent ${out.sent.files} file(s), ${out.sent.bytes} B`);
  for (const app of out.rolling) console.log(`  app ${app} follows the latest revision: rolling update started`);
}

/**
 * `molt app prepare`: every volume of the app in `dir` is made ready on the server. A missing
 * volume of the app's namespace is created (its first revision from `init`, if set); a local copy
 * with changes is pushed. Returns the lines to print.
 */
export async function prepareVolumes(client: Client, namespace: string, dir: string, file: string | undefined): Promise<string[]> {
  const { loadAppConfig } = await import('../../config/load-config.js');
  const cache = await import('../volume-cache.js');
  const { ApiError } = await import('../client.js');
  const { spec } = await loadAppConfig(dir, file);
  const lines: string[] = [];
  if (spec.volumes.length === 0) return [`app ${spec.name} uses no volumes: nothing to prepare`];
  for (const ref of spec.volumes) {
    const t = volumeTarget(ref.name, { namespace });
    let detail: VolumeDetail | undefined;
    try {
      detail = await fetchVolume(client, t);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404 && t.namespace === namespace)) throw err;
    }
    if (!detail) {
      const { volume: v } = await client.request<{ volume: VolumeRow }>('POST', `/api/v1/namespaces/${namespace}/volumes`, { name: t.name });
      lines.push(`volume ${t.name} created`);
      if (ref.init) {
        const out = await cache.push(client, v, resolve(dir, ref.init));
        lines.push(`volume ${t.name}: revision ${out.revision.revision} from ${ref.init} (${out.revision.files} file(s), ${out.revision.size} B)`);
        await cache.pull(client, v);
      } else {
        cache.initEmpty(client, v);
        lines.push(`volume ${t.name} is empty: add files in ${cache.volumePath(v.id)} and run \`molt app prepare\` again`);
      }
      continue;
    }
    const local = await cache.localChanges(detail.volume.id);
    if (local?.changed) {
      const out = await cache.push(client, detail.volume);
      lines.push(
        out.changed
          ? `volume ${ref.name}: pushed revision ${out.revision.revision}; sent ${out.sent.files} file(s), ${out.sent.bytes} B${out.rolling.length ? `; rolling ${out.rolling.join(', ')} to it` : ''}`
          : `volume ${ref.name}: unchanged at ${out.revision.revision}`,
      );
    } else lines.push(`volume ${ref.name}: unchanged at ${detail.latest?.revision ?? '(no revision yet)'}`);
  }
  return lines;
}
