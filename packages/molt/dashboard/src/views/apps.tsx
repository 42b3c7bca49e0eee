import { api, enc } from '../api.ts';
import { ago, rate, short } from '../format.ts';
import { useLive, useNamespaces } from '../hooks.ts';
import { href } from '../router.ts';
import type { AppSummary, Principal } from '../types.ts';
import { Problem } from './problem.tsx';

/** What an app is doing, in a word, for the list. */
export function appStatus(a: AppSummary): { label: string; tone: 'ok' | 'busy' | 'warn' | 'bad' } {
  if (a.paused) return { label: 'paused', tone: 'warn' };
  if (a.rolloutId) return { label: `updating (${a.lastRollout?.strategy ?? '…'})`, tone: 'busy' };
  const wanted = a.spec?.workers ?? 0;
  if (a.currentRevision === 0) return { label: a.lastRollout?.phase === 'failed' ? 'failed' : 'pending', tone: a.lastRollout?.phase === 'failed' ? 'bad' : 'busy' };
  if (a.workers.running < wanted) return { label: `degraded`, tone: 'warn' };
  if (a.probationUntil) return { label: 'on probation', tone: 'busy' };
  return { label: 'running', tone: 'ok' };
}

export function outcome(a: AppSummary): string {
  const r = a.lastRollout;
  if (!r) return '—';
  const what = r.fromRevision === r.toRevision ? 'recycle' : r.toRevision < r.fromRevision ? 'rollback' : 'update';
  return `${what} ${r.fromRevision}→${r.toRevision} ${r.strategy}: ${r.phase} ${ago(r.finishedAt ?? r.createdAt)}`;
}

export function AppsView({ me }: { me: Principal }) {
  const namespaces = useNamespaces(me);
  const names = (namespaces.data ?? []).map((n) => n.name);
  const apps = useLive(
    async () => (await Promise.all(names.map(async (ns) => (await api<{ apps: AppSummary[] }>('GET', `/namespaces/${enc(ns)}/apps`)).apps))).flat(),
    [names.join(',')],
    { everyMs: 5000, relevant: (e) => e.app !== null && (e.type.startsWith('rollout.') || e.type.startsWith('worker.') || e.type.startsWith('app.') || e.type.startsWith('revision.')) },
  );
  const rows = apps.data ?? [];
  return (
    <section aria-labelledby="apps-title">
      <h1 id="apps-title">Apps</h1>
      <Problem error={namespaces.error ?? apps.error} />
      {apps.data && rows.length === 0 && <p>No apps yet. Deploy one with <code>npx molt app create</code> in its directory.</p>}
      {rows.length > 0 && (
        <div class="scroll">
          <table class="apps">
            <caption class="sr-only">Apps of {me.namespace === '*' ? 'all namespaces' : `namespace ${me.namespace}`}, with their last update and live figures</caption>
            <thead>
              <tr>
                <th scope="col">App</th>
                <th scope="col">Namespace</th>
                <th scope="col">Status</th>
                <th scope="col">Revision</th>
                <th scope="col">Permanent</th>
                <th scope="col">Release</th>
                <th scope="col">Last update</th>
                <th scope="col">Workers</th>
                <th scope="col">Req/s</th>
                <th scope="col">5xx/s</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((a) => {
                const s = appStatus(a);
                return (
                  <tr key={`${a.namespace}/${a.name}`} data-app={a.name}>
                    <th scope="row">
                      <a href={href('apps', a.namespace, a.name)}>{a.name}</a>
                    </th>
                    <td>{a.namespace}</td>
                    <td>
                      <span class={`badge ${s.tone}`}>{s.label}</span>
                    </td>
                    <td>{a.currentRevision || '—'}</td>
                    <td>{a.permanentRevision ?? (a.currentRevision || '—')}</td>
                    <td>
                      <code title={a.release ?? ''}>{short(a.release)}</code>
                    </td>
                    <td>{outcome(a)}</td>
                    <td class="num" data-cell="workers">
                      {a.workers.running} / {a.spec?.workers ?? 0}
                    </td>
                    <td class="num">{rate(a.figures?.rps)}</td>
                    <td class={`num${a.figures && a.figures.errorsPerSec > 0 ? ' bad' : ''}`}>{rate(a.figures?.errorsPerSec)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
