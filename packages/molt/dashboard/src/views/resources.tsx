import { useEffect, useRef, useState } from 'preact/hooks';
import { api, enc } from '../api.ts';
import { bytes, short, when } from '../format.ts';
import { useLive, useNamespaces } from '../hooks.ts';
import { href } from '../router.ts';
import type { AppSummary, NamespaceView, NodeView, Principal, ReleaseRow, TokenRow, VolumeRevisionRow, VolumeRow } from '../types.ts';
import { Problem } from './problem.tsx';

/** Every namespace's rows of one list endpoint, flattened. */
function useEach<T>(me: Principal, path: (ns: string) => string, pick: (body: any) => T[], relevant?: (type: string) => boolean) {
  const namespaces = useNamespaces(me);
  const names = (namespaces.data ?? []).map((n) => n.name);
  const rows = useLive(async () => (await Promise.all(names.map(async (ns) => pick(await api('GET', path(ns)))))).flat(), [names.join(',')], {
    relevant: relevant ? (e) => relevant(e.type) : undefined,
  });
  return { rows: rows.data, error: namespaces.error ?? rows.error };
}

type VolumeListRow = VolumeRow & { latest: VolumeRevisionRow | null };

export function VolumesView({ me, namespace, volume }: { me: Principal; namespace?: string; volume?: string }) {
  if (namespace && volume) return <VolumeDetail me={me} namespace={namespace} name={volume} />;
  const { rows, error } = useEach<VolumeListRow>(me, (ns) => `/namespaces/${enc(ns)}/volumes`, (b) => b.volumes, (t) => t.startsWith('volume.'));
  return (
    <section aria-labelledby="volumes-title">
      <h1 id="volumes-title">Volumes</h1>
      <Problem error={error} />
      {rows && rows.length === 0 && <p>No volumes. Make one with <code>npx molt volume create NAME</code>.</p>}
      {rows && rows.length > 0 && (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Volume</th>
                <th scope="col">Namespace</th>
                <th scope="col">Latest revision</th>
                <th scope="col">Files</th>
                <th scope="col">Size</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((v) => (
                <tr>
                  <th scope="row">
                    <a href={href('volumes', v.namespace, v.name)}>{v.name}</a>
                  </th>
                  <td>{v.namespace}</td>
                  <td>
                    <code>{v.latest?.revision ?? '—'}</code>
                  </td>
                  <td class="num">{v.latest?.files ?? 0}</td>
                  <td class="num">{bytes(v.latest?.size ?? 0)}</td>
                  <td>{when(v.updatedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function VolumeDetail({ me, namespace, name }: { me: Principal; namespace: string; name: string }) {
  const detail = useLive(() => api<{ volume: VolumeRow; revisions: VolumeRevisionRow[]; grants: { namespace: string; write: boolean }[] }>('GET', `/namespaces/${enc(namespace)}/volumes/${enc(name)}`), [namespace, name], {
    relevant: (e) => e.type.startsWith('volume.'),
  });
  const [revision, setRevision] = useState<string>();
  const tree = useLive(
    () => api<{ revision: VolumeRevisionRow; tree: { entries: { path: string; type: string; size?: number }[] } }>('GET', `/namespaces/${enc(namespace)}/volumes/${enc(name)}/tree${revision ? `?revision=${enc(revision)}` : ''}`),
    [namespace, name, revision],
  );
  // Which apps (of the namespaces this token sees) follow the volume, or pin one of its revisions.
  const { rows: apps } = useEach<AppSummary>(me, (ns) => `/namespaces/${enc(ns)}/apps`, (b) => b.apps);
  const users = (apps ?? []).flatMap((a) => a.volumes.filter((v) => v.volumeId === detail.data?.volume.id).map((v) => ({ app: a, v })));
  const revisions = [...(detail.data?.revisions ?? [])].reverse();
  return (
    <section aria-labelledby="volume-title">
      <p class="crumbs">
        <a href="#/volumes">Volumes</a> / {namespace} /
      </p>
      <h1 id="volume-title">{name}</h1>
      <Problem error={detail.error} />
      <h2>Revisions</h2>
      <div class="scroll">
        <table>
          <thead>
            <tr>
              <th scope="col">Revision</th>
              <th scope="col">Files</th>
              <th scope="col">Size</th>
              <th scope="col">Added</th>
              <th scope="col">Pushed</th>
              <th scope="col">Used by</th>
              <th scope="col">
                <span class="sr-only">Files</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {revisions.map((r, i) => {
              const by = users.filter((u) => u.v.revision === r.revision);
              return (
                <tr>
                  <th scope="row">
                    <code>{r.revision}</code>
                    {i === 0 ? ' (latest)' : ''}
                  </th>
                  <td class="num">{r.files}</td>
                  <td class="num">{bytes(r.size)}</td>
                  <td class="num">{bytes(r.addedBytes)}</td>
                  <td>{when(r.createdAt)}</td>
                  <td>
                    {by.length === 0
                      ? '—'
                      : by.map((u) => (
                          <span class="user">
                            <a href={href('apps', u.app.namespace, u.app.name)}>
                              {u.app.namespace}/{u.app.name}
                            </a>{' '}
                            ({u.v.useLatest ? 'follows' : 'pins'})
                          </span>
                        ))}
                  </td>
                  <td>
                    <button type="button" onClick={() => setRevision(r.revision)} aria-pressed={(revision ?? revisions[0]?.revision) === r.revision}>
                      Show files
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {(detail.data?.grants.length ?? 0) > 0 && (
        <>
          <h2>Shared with</h2>
          <ul>
            {detail.data!.grants.map((g) => (
              <li>
                {g.namespace} ({g.write ? 'read and write' : 'read'})
              </li>
            ))}
          </ul>
        </>
      )}
      <h2>Files of {tree.data?.revision.revision ?? '…'}</h2>
      <Problem error={tree.error} />
      <div class="scroll">
        <table class="tree">
          <thead>
            <tr>
              <th scope="col">Path</th>
              <th scope="col">Size</th>
            </tr>
          </thead>
          <tbody>
            {(tree.data?.tree.entries ?? []).slice(0, 2000).map((e) => (
              <tr>
                <th scope="row">
                  <code>
                    {e.path}
                    {e.type === 'dir' ? '/' : ''}
                  </code>
                </th>
                <td class="num">{e.type === 'file' ? bytes(e.size ?? 0) : ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

export function ReleasesView({ me, namespace, release }: { me: Principal; namespace?: string; release?: string }) {
  if (namespace && release) return <ReleaseDetail namespace={namespace} id={release} />;
  const { rows, error } = useEach<ReleaseRow>(me, (ns) => `/namespaces/${enc(ns)}/releases`, (b) => b.releases);
  return (
    <section aria-labelledby="releases-title">
      <h1 id="releases-title">Releases</h1>
      <Problem error={error} />
      {rows && rows.length === 0 && <p>No releases yet.</p>}
      {rows && rows.length > 0 && (
        <div class="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Release</th>
                <th scope="col">App</th>
                <th scope="col">Namespace</th>
                <th scope="col">Version</th>
                <th scope="col">Modules</th>
                <th scope="col">Files</th>
                <th scope="col">Size</th>
                <th scope="col">Uploaded</th>
              </tr>
            </thead>
            <tbody>
              {[...rows].reverse().map((r) => (
                <tr>
                  <th scope="row">
                    <a href={href('releases', r.namespace, r.id)}>
                      <code>{short(r.id)}</code>
                    </a>
                  </th>
                  <td>{r.app}</td>
                  <td>{r.namespace}</td>
                  <td>{r.manifest.version}</td>
                  <td class="num">{r.manifest.modules.length}</td>
                  <td class="num">{r.files}</td>
                  <td class="num">{bytes(r.size)}</td>
                  <td>{when(r.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function ReleaseDetail({ namespace, id }: { namespace: string; id: string }) {
  const r = useLive(async () => (await api<{ release: ReleaseRow }>('GET', `/namespaces/${enc(namespace)}/releases/${enc(id)}`)).release, [namespace, id]);
  const m = r.data?.manifest;
  return (
    <section aria-labelledby="release-title">
      <p class="crumbs">
        <a href="#/releases">Releases</a> / {namespace} /
      </p>
      <h1 id="release-title">
        Release <code>{short(id)}</code>
      </h1>
      <Problem error={r.error} />
      {m && (
        <>
          <dl class="facts">
            <dt>Id</dt>
            <dd>
              <code>{id}</code>
            </dd>
            <dt>App</dt>
            <dd>
              {m.app} {m.version}
            </dd>
            <dt>Node</dt>
            <dd>{m.node}</dd>
            <dt>Entry</dt>
            <dd>
              <code>{m.entry}</code>
            </dd>
            <dt>Dependencies</dt>
            <dd>
              <code>{short(m.dependencyHash, 16)}</code>
            </dd>
            <dt>Config</dt>
            <dd>
              <code>{short(m.configHash, 16)}</code>
            </dd>
          </dl>
          <h2>Modules</h2>
          <div class="scroll">
            <table>
              <thead>
                <tr>
                  <th scope="col">Module</th>
                  <th scope="col">Source</th>
                  <th scope="col">Hash</th>
                  <th scope="col">Imports</th>
                  <th scope="col">Processes</th>
                  <th scope="col">codeChange</th>
                </tr>
              </thead>
              <tbody>
                {m.modules.map((mod) => (
                  <tr>
                    <th scope="row">
                      <code>{mod.path}</code>
                    </th>
                    <td>
                      <code>{mod.source}</code>
                    </td>
                    <td>
                      <code>{short(mod.hash)}</code>
                    </td>
                    <td>{mod.imports.join(', ') || '—'}</td>
                    <td>{(mod.processes ?? []).join(', ') || '—'}</td>
                    <td>{mod.codeChange ? 'yes' : 'no'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <details>
            <summary>Manifest as JSON</summary>
            <pre>{JSON.stringify(m, null, 2)}</pre>
          </details>
        </>
      )}
    </section>
  );
}

export function NodesView() {
  const nodes = useLive(async () => (await api<{ nodes: NodeView[] }>('GET', '/nodes')).nodes, [], { everyMs: 5000 });
  return (
    <section aria-labelledby="nodes-title">
      <h1 id="nodes-title">Nodes</h1>
      <Problem error={nodes.error} />
      {(nodes.data ?? []).map((n) => (
        <article class="node">
          <h2>{n.name}</h2>
          <dl class="facts">
            <dt>CPU</dt>
            <dd>
              {n.used.cpu} of {n.cpu} cores requested
            </dd>
            <dt>Memory</dt>
            <dd>
              {n.used.memoryMb} of {n.memoryMb} MiB requested
            </dd>
            <dt>Workers</dt>
            <dd>{n.workers}</dd>
            <dt>GPUs</dt>
            <dd>{n.gpus.length === 0 ? `none (${n.gpuSource})` : n.gpus.map((g) => `#${g.index} ${g.name ?? ''} ${g.usedBy ? `used by ${g.usedBy}` : 'free'}`).join('; ')}</dd>
            <dt>Limits</dt>
            <dd>{n.limits}</dd>
            <dt>Isolation</dt>
            <dd>{n.isolation}</dd>
          </dl>
        </article>
      ))}
    </section>
  );
}

type PublicToken = Omit<TokenRow, 'hash'>;

export function TokensView({ me }: { me: Principal }) {
  const tokens = useLive(async () => (await api<{ tokens: PublicToken[] }>('GET', '/tokens')).tokens, [me.tokenId]);
  const namespaces = useNamespaces(me);
  const [made, setMade] = useState<{ token: string; id: string }>();
  const [error, setError] = useState<string>();
  const [revoking, setRevoking] = useState<PublicToken>();
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    if (revoking) dialog.current?.showModal();
    else dialog.current?.close();
  }, [revoking]);
  const create = async (e: Event) => {
    e.preventDefault();
    const form = new FormData(e.target as HTMLFormElement);
    setError(undefined);
    try {
      const r = await api<{ token: string; id: string }>('POST', '/tokens', { namespace: form.get('namespace'), role: form.get('role'), name: form.get('name') || undefined });
      setMade(r);
      tokens.reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const revoke = async () => {
    const t = revoking!;
    setRevoking(undefined);
    try {
      await api('DELETE', `/tokens/${enc(t.id)}`);
      tokens.reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <section aria-labelledby="tokens-title">
      <h1 id="tokens-title">Tokens and quotas</h1>
      <Problem error={error ?? tokens.error} />
      <div class="scroll">
        <table>
          <thead>
            <tr>
              <th scope="col">Id</th>
              <th scope="col">Name</th>
              <th scope="col">Namespace</th>
              <th scope="col">Role</th>
              <th scope="col">Created</th>
              <th scope="col">Revoked</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(tokens.data ?? []).map((t) => (
              <tr data-token={t.id}>
                <th scope="row">
                  <code>{t.id}</code>
                </th>
                <td>{t.name}</td>
                <td>{t.namespace}</td>
                <td>{t.role}</td>
                <td>{when(t.createdAt)}</td>
                <td>{when(t.revokedAt)}</td>
                <td>
                  {!t.revokedAt && t.id !== me.tokenId && (
                    <button type="button" onClick={() => setRevoking(t)} aria-label={`Revoke token ${t.id} (${t.name})`}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <form class="inline" onSubmit={create}>
        <h2>New token</h2>
        <label for="t-ns">Namespace</label>
        <select id="t-ns" name="namespace">
          {(namespaces.data ?? []).map((n) => (
            <option value={n.name}>{n.name}</option>
          ))}
        </select>
        <label for="t-role">Role</label>
        <select id="t-role" name="role">
          <option value="invoker">invoker (call its apps)</option>
          <option value="deployer">deployer (deploy and read)</option>
          <option value="admin">admin (tokens of the namespace)</option>
        </select>
        <label for="t-name">Name</label>
        <input id="t-name" name="name" maxLength={100} />
        <button type="submit">Create</button>
      </form>
      {made && (
        <p role="status" class="made">
          Token {made.id}, shown once: <code>{made.token}</code>
        </p>
      )}
      <h2>Quotas and use</h2>
      <Quotas namespaces={namespaces.data ?? []} />
      <dialog ref={dialog} onClose={() => setRevoking(undefined)} aria-labelledby="revoke-title">
        <h2 id="revoke-title">Revoke token {revoking?.id}?</h2>
        <p>Every request and dashboard session made with it is refused from now on. This cannot be undone.</p>
        <div class="buttons">
          <button type="button" onClick={() => setRevoking(undefined)}>
            Cancel
          </button>
          <button type="button" class="primary danger" onClick={revoke}>
            Revoke
          </button>
        </div>
      </dialog>
    </section>
  );
}

function Quotas({ namespaces }: { namespaces: NamespaceView[] }) {
  const keys = ['workers', 'cpu', 'memoryMb', 'gpus', 'volumeBytes', 'releases'];
  return (
    <div class="scroll">
      <table>
        <thead>
          <tr>
            <th scope="col">Namespace</th>
            {keys.map((k) => (
              <th scope="col">{k}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {namespaces.map((n) => (
            <tr>
              <th scope="row">{n.name}</th>
              {keys.map((k) => {
                const used = n.usage[k] ?? 0;
                const max = n.quota?.[k];
                return <td class="num">{`${k === 'volumeBytes' ? bytes(used) : used} / ${max === null || max === undefined ? '∞' : k === 'volumeBytes' ? bytes(max) : max}`}</td>;
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
