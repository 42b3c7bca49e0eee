import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, appPath, streamNdjson } from '../api.ts';
import { type Mark, Chart, type Series } from '../chart.tsx';
import { ms, rate, short, when } from '../format.ts';
import { useAppEvents, useLive } from '../hooks.ts';
import { live } from '../live.ts';
import { href } from '../router.ts';
import type { AppSummary, EventRow, LogLine, MetricPoint, Principal, RevisionRow, WorkerView } from '../types.ts';
import { appStatus, outcome } from './apps.tsx';
import { Progress } from './progress.tsx';
import { UpgradeFlow } from './upgrade.tsx';
import { Problem } from './problem.tsx';

const TABS = [
  ['overview', 'Overview'],
  ['history', 'History'],
  ['logs', 'Logs'],
  ['volumes', 'Volumes'],
  ['events', 'Events'],
  ['upgrade', 'Upgrade'],
] as const;

const mayDeploy = (me: Principal, ns: string) => me.role !== 'invoker' && (me.namespace === '*' || me.namespace === ns);

export function AppView({ me, namespace, app, tab }: { me: Principal; namespace: string; app: string; tab: string }) {
  const mine = (e: EventRow) => e.namespace === namespace && e.app === app;
  const summary = useLive(async () => (await api<{ app: AppSummary }>('GET', appPath(namespace, app))).app, [namespace, app], { everyMs: 5000, relevant: mine });
  // A rollout started anywhere (the CLI, another tab) shows here as it runs.
  const [liveRollout, setLiveRollout] = useState<string>();
  useEffect(() => {
    setLiveRollout(undefined);
    return live.subscribe((batch) => {
      const started = batch.filter((e) => mine(e) && e.type === 'rollout.started' && e.rolloutId).at(-1);
      if (started) setLiveRollout(started.rolloutId!);
    });
  }, [namespace, app]);
  const a = summary.data;
  const rolloutId = liveRollout ?? a?.rolloutId ?? undefined;
  const s = a && appStatus(a);
  return (
    <section aria-labelledby="app-title">
      <p class="crumbs">
        <a href="#/">Apps</a> / {namespace} /
      </p>
      <h1 id="app-title">
        {app} {s && <span class={`badge ${s.tone}`}>{s.label}</span>}
      </h1>
      <Problem error={summary.error} />
      {a && (
        <dl class="facts">
          <dt>Revision</dt>
          <dd>{a.currentRevision || '—'}</dd>
          <dt>Permanent</dt>
          <dd>{a.permanentRevision ?? (a.currentRevision || '—')}{a.probationUntil ? ` (revision ${a.currentRevision} on probation until ${when(a.probationUntil)})` : ''}</dd>
          <dt>Release</dt>
          <dd>
            <a href={href('releases', namespace, a.release ?? '')}>
              <code>{short(a.release)}</code>
            </a>
          </dd>
          <dt>Last update</dt>
          <dd>{outcome(a)}</dd>
          <dt>Workers</dt>
          <dd>
            {a.workers.running} ready / {a.spec?.workers ?? 0} wanted
          </dd>
          <dt>Traffic</dt>
          <dd>
            {rate(a.figures?.rps)} req/s, {rate(a.figures?.errorsPerSec)} 5xx/s, p50 {ms(a.figures?.p50Ms)}, p99 {ms(a.figures?.p99Ms)}
          </dd>
          <dt>Route</dt>
          <dd>
            <code>{a.route}</code>
          </dd>
        </dl>
      )}
      <nav class="tabs" aria-label={`Views of ${app}`}>
        {TABS.map(([id, label]) => (
          <a href={href('apps', namespace, app, id)} aria-current={tab === id ? 'page' : undefined}>
            {label}
          </a>
        ))}
      </nav>
      {rolloutId && tab !== 'upgrade' && tab !== 'history' && <Progress namespace={namespace} app={app} rolloutId={rolloutId} onDone={() => summary.reload()} />}
      {tab === 'overview' && <Overview namespace={namespace} app={app} />}
      {tab === 'history' && <History me={me} namespace={namespace} app={app} running={rolloutId} />}
      {tab === 'logs' && <Logs namespace={namespace} app={app} />}
      {tab === 'volumes' && a && <AppVolumes a={a} />}
      {tab === 'events' && <Events namespace={namespace} app={app} />}
      {tab === 'upgrade' && (mayDeploy(me, namespace) ? <UpgradeFlow namespace={namespace} app={app} summary={a} /> : <p>This token cannot update apps in {namespace}: that needs the deployer role.</p>)}
    </section>
  );
}

const COLORS = ['#2b6cb0', '#c53030', '#2f855a', '#b7791f', '#6b46c1', '#2c7a7b', '#d53f8c', '#4a5568'];

/** An hour of figures, then new readings appended as the data plane takes them. */
function useFigures(namespace: string, app: string): { points: MetricPoint[]; error?: string } {
  const [points, setPoints] = useState<MetricPoint[]>([]);
  const [error, setError] = useState<string>();
  useEffect(() => {
    let alive = true;
    let last = 0;
    let timer: number | undefined;
    const pull = async () => {
      try {
        const r = await api<{ intervalMs: number; points: MetricPoint[] }>('GET', `${appPath(namespace, app)}/metrics?since=${last}`);
        if (!alive) return;
        setError(undefined);
        if (r.points.length) {
          last = r.points.at(-1)!.t;
          const hour = Date.now() - 3600_000;
          setPoints((old) => [...old, ...r.points].filter((p) => p.t > hour));
        }
        timer = window.setTimeout(pull, Math.max(1000, r.intervalMs));
      } catch (err) {
        if (!alive) return;
        setError((err as Error).message);
        timer = window.setTimeout(pull, 5000);
      }
    };
    setPoints([]);
    void pull();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [namespace, app]);
  return { points, error };
}

/** Update and rollback marks of the last hour, from the app's events. */
function useMarks(namespace: string, app: string): Mark[] {
  const history = useLive(() => readEvents(namespace, app), [namespace, app]);
  const events = useAppEvents(namespace, app, history.data);
  return useMemo(
    () =>
      events.flatMap((e): Mark[] => {
        const t = Date.parse(e.ts);
        if (e.type === 'rollout.started') return [{ t, label: e.message, kind: /back|rollback/i.test(e.message) ? 'rollback' : 'update' }];
        if (e.type === 'rollout.failed' || e.type === 'revision.not-permanent') return [{ t, label: e.message, kind: 'failure' }];
        if (e.type === 'worker.downgraded') return [{ t, label: e.message, kind: 'rollback' }];
        return [];
      }),
    [events],
  );
}

function Overview({ namespace, app }: { namespace: string; app: string }) {
  const { points, error } = useFigures(namespace, app);
  const marks = useMarks(namespace, app);
  const workers = useLive(async () => (await api<{ workers: WorkerView[] }>('GET', `${appPath(namespace, app)}/workers?all=1`)).workers, [namespace, app], {
    everyMs: 5000,
    relevant: (e) => e.namespace === namespace && e.app === app && e.type.startsWith('worker.'),
  });
  const times = useMemo(() => points.map((p) => p.t), [points]);
  const ids = useMemo(() => [...new Set(points.flatMap((p) => Object.keys(p.workers)))], [points]);
  const series = useMemo(() => {
    const per = (f: (p: MetricPoint) => number | null): (number | null)[] => points.map(f);
    const perWorker = (k: 'rssMb' | 'cpuPercent'): Series[] => ids.map((id, i) => ({ label: id.slice(0, 8), color: COLORS[i % COLORS.length]!, values: per((p) => p.workers[id]?.[k] ?? null) }));
    return {
      traffic: [
        { label: 'req/s', color: COLORS[0]!, values: per((p) => p.rps) },
        { label: '5xx/s', color: COLORS[1]!, values: per((p) => p.errorsPerSec) },
      ],
      latency: [
        { label: 'p50', color: COLORS[2]!, values: per((p) => p.p50Ms) },
        { label: 'p99', color: COLORS[3]!, values: per((p) => p.p99Ms) },
      ],
      rss: perWorker('rssMb'),
      cpu: perWorker('cpuPercent'),
    };
  }, [points, ids]);
  const shown = (workers.data ?? []).filter((w) => !w.deletedAt || Date.now() - Date.parse(w.deletedAt) < 3600_000).slice(-40);
  return (
    <>
      <section aria-labelledby="figures-title">
        <h2 id="figures-title">Figures, last hour</h2>
        <Problem error={error} />
        <div class="charts">
          <Chart title="Requests and 5xx per second" unit="/s" times={times} series={series.traffic} marks={marks} />
          <Chart title="Latency (gateway)" unit="ms" times={times} series={series.latency} marks={marks} />
          <Chart title="Memory per worker (RSS)" unit="MiB" times={times} series={series.rss} marks={marks} />
          <Chart title="CPU per worker" unit="%" times={times} series={series.cpu} marks={marks} />
        </div>
        <p class="legend">
          <span class="mark update">update</span> <span class="mark rollback">rollback</span> <span class="mark failure">failure</span>
        </p>
      </section>
      <section aria-labelledby="workers-title">
        <h2 id="workers-title">Workers</h2>
        <div class="scroll">
          <table class="workers">
            <caption class="sr-only">Workers of {app}, live</caption>
            <thead>
              <tr>
                <th scope="col">ID</th>
                <th scope="col">STATUS</th>
                <th scope="col">DETAIL_STATUS</th>
                <th scope="col">CREATED_AT</th>
                <th scope="col">DELETED_AT</th>
                <th scope="col">REVISION</th>
                <th scope="col">RELEASE</th>
                <th scope="col">LIMITS</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((w) => (
                <tr data-worker={w.id} data-status={w.status}>
                  <th scope="row">
                    <code>{w.id}</code>
                  </th>
                  <td>
                    <span class={`badge ${w.status === 'RUNNING' ? 'ok' : w.status === 'TERMINATED' ? 'off' : w.status === 'ERROR' ? 'bad' : 'busy'}`}>{w.status}</span>
                  </td>
                  <td>{w.detailStatus ?? '—'}</td>
                  <td>{when(w.createdAt)}</td>
                  <td>{when(w.deletedAt)}</td>
                  <td>{w.revision}</td>
                  <td>
                    <code>{short(w.release)}</code>
                  </td>
                  <td>{w.limits ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
    </>
  );
}

function History({ me, namespace, app, running }: { me: Principal; namespace: string; app: string; running?: string }) {
  const history = useLive(() => api<{ current: number; revisions: RevisionRow[] }>('GET', `${appPath(namespace, app)}/history`), [namespace, app], {
    relevant: (e) => e.namespace === namespace && e.app === app && (e.type.startsWith('rollout.') || e.type.startsWith('revision.')),
  });
  const [asking, setAsking] = useState<number>();
  const [rollout, setRollout] = useState<string | undefined>(running);
  const [error, setError] = useState<string>();
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    if (asking !== undefined) dialog.current?.showModal();
    else dialog.current?.close();
  }, [asking]);
  useEffect(() => {
    if (running) setRollout(running);
  }, [running]);
  const rollBack = async () => {
    const to = asking!;
    setAsking(undefined);
    setError(undefined);
    try {
      const r = await api<{ rollout?: { id: string }; reason?: string }>('POST', `${appPath(namespace, app)}/rollback`, { to });
      if (r.rollout) setRollout(r.rollout.id);
      else setError(r.reason ?? 'nothing to roll back');
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const current = history.data?.current;
  const revisions = [...(history.data?.revisions ?? [])].reverse();
  return (
    <section aria-labelledby="history-title">
      <h2 id="history-title">History</h2>
      <Problem error={error ?? history.error} />
      {rollout && <Progress namespace={namespace} app={app} rolloutId={rollout} onDone={() => history.reload()} />}
      <div class="scroll">
        <table class="history">
          <caption class="sr-only">Revisions of {app}, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Revision</th>
              <th scope="col">Status</th>
              <th scope="col">Cause</th>
              <th scope="col">Release</th>
              <th scope="col">Created</th>
              <th scope="col">Reason</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {revisions.map((r) => (
              <tr data-revision={r.revision}>
                <th scope="row">{r.revision}</th>
                <td>
                  <span class={`badge ${r.status === 'active' ? 'ok' : r.status === 'failed' || r.status === 'ghosted' ? 'bad' : 'off'}`}>{r.status}</span>
                </td>
                <td>{r.cause}</td>
                <td>
                  <code>{short(r.releaseId)}</code>
                </td>
                <td>{when(r.createdAt)}</td>
                <td>{r.reason ?? ''}</td>
                <td>
                  {mayDeploy(me, namespace) && r.revision !== current && (
                    <button type="button" onClick={() => setAsking(r.revision)} aria-label={`Roll back to revision ${r.revision}`}>
                      Roll back
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <dialog ref={dialog} onClose={() => setAsking(undefined)} aria-labelledby="confirm-title">
        <h2 id="confirm-title">Roll back {app}?</h2>
        <p>
          Revision {asking} will serve again, in place of revision {current}: hot if its plan allows, else worker by worker.
        </p>
        <div class="buttons">
          <button type="button" onClick={() => setAsking(undefined)}>
            Cancel
          </button>
          <button type="button" class="primary" onClick={rollBack}>
            Roll back to revision {asking}
          </button>
        </div>
      </dialog>
    </section>
  );
}

function Logs({ namespace, app }: { namespace: string; app: string }) {
  const [worker, setWorker] = useState('');
  const [lines, setLines] = useState<LogLine[]>([]);
  const [paused, setPaused] = useState(false);
  const [error, setError] = useState<string>();
  const workers = useLive(async () => (await api<{ workers: WorkerView[] }>('GET', `${appPath(namespace, app)}/workers`)).workers, [namespace, app], { everyMs: 10_000 });
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  useEffect(() => {
    const abort = new AbortController();
    const buffer: LogLine[] = [];
    let frame = 0;
    setLines([]);
    setError(undefined);
    const flush = () => {
      frame = 0;
      if (pausedRef.current) return;
      const batch = buffer.splice(0);
      setLines((old) => [...old, ...batch].slice(-1000));
    };
    streamNdjson<LogLine>(
      `${appPath(namespace, app)}/logs?follow=1&tail=200${worker ? `&worker=${encodeURIComponent(worker)}` : ''}`,
      (l) => {
        buffer.push(l);
        if (!frame) frame = requestAnimationFrame(flush);
      },
      abort.signal,
    ).catch((err: Error) => !abort.signal.aborted && setError(err.message));
    return () => {
      abort.abort();
      cancelAnimationFrame(frame);
    };
  }, [namespace, app, worker]);
  return (
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Logs</h2>
      <div class="toolbar">
        <label for="log-worker">Worker</label>
        <select id="log-worker" value={worker} onChange={(e) => setWorker((e.target as HTMLSelectElement).value)}>
          <option value="">all workers</option>
          {(workers.data ?? []).map((w) => (
            <option value={w.id}>
              {w.id} ({w.status})
            </option>
          ))}
        </select>
        <button type="button" onClick={() => setPaused(!paused)} aria-pressed={paused}>
          {paused ? 'Resume' : 'Pause'}
        </button>
        <button type="button" onClick={() => setLines([])}>
          Clear
        </button>
      </div>
      <Problem error={error} />
      <ol class="logs" aria-live="off" aria-label={`Log lines of ${app}`}>
        {lines.map((l) => (
          <li class={l.stream}>
            <time>{l.ts.slice(11, 23)}</time> <code class="wid">{l.workerId.slice(0, 8)}</code> <span class="line">{l.line}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}

function AppVolumes({ a }: { a: AppSummary }) {
  if (a.volumes.length === 0) return <p>{a.name} mounts no volume.</p>;
  return (
    <section aria-labelledby="app-volumes-title">
      <h2 id="app-volumes-title">Volumes</h2>
      <div class="scroll">
        <table>
          <thead>
            <tr>
              <th scope="col">Mounted as</th>
              <th scope="col">Volume</th>
              <th scope="col">Revision</th>
              <th scope="col">Follows</th>
            </tr>
          </thead>
          <tbody>
            {a.volumes.map((v) => (
              <tr>
                <th scope="row">{v.ref}</th>
                <td>
                  <a href={href('volumes', v.namespace, v.name)}>
                    {v.namespace}/{v.name}
                  </a>
                </td>
                <td>
                  <code>{v.revision}</code>
                </td>
                <td>{v.useLatest ? 'latest (rolls on each push)' : 'pinned'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

/** The app's stored events (the stream without follow ends after the backlog). */
async function readEvents(namespace: string, app: string): Promise<EventRow[]> {
  const out: EventRow[] = [];
  await streamNdjson<EventRow>(`${appPath(namespace, app)}/events`, (e) => out.push(e), new AbortController().signal);
  return out;
}

function Events({ namespace, app }: { namespace: string; app: string }) {
  const stored = useLive(() => readEvents(namespace, app), [namespace, app]);
  const events = useAppEvents(namespace, app, stored.data);
  return (
    <section aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <Problem error={stored.error} />
      <ol class="events" reversed>
        {[...events].reverse().slice(0, 300).map((e) => (
          <li class={e.level} data-type={e.type}>
            <time>{when(e.ts)}</time> <code>{e.type}</code> {e.message}
          </li>
        ))}
      </ol>
    </section>
  );
}
