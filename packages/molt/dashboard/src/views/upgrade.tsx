import { useState } from 'preact/hooks';
import { api, appPath, enc, uploadRelease } from '../api.ts';
import { bytes, short, when } from '../format.ts';
import { useLive } from '../hooks.ts';
import type { AppSummary, ReleaseRow, UpdateResult } from '../types.ts';
import { Progress } from './progress.tsx';
import { Problem } from './problem.tsx';

type Step = { op: string; module: string; fn?: string; reason?: string };

function Steps({ title, steps }: { title: string; steps: Step[] }) {
  return (
    <>
      <h4>{title}</h4>
      {steps.length === 0 ? (
        <p>(nothing)</p>
      ) : (
        <ol class="steps">
          {steps.map((s) => (
            <li>
              <code>{s.op}</code> <code>{s.module}</code>
              {s.fn ? <code> {s.fn}()</code> : null}
              {s.reason ? <span class="why"> ({s.reason})</span> : null}
            </li>
          ))}
        </ol>
      )}
    </>
  );
}

/** The plan against what runs, as the server made it in a dry run. */
function Plan({ plan, summary }: { plan: UpdateResult; summary?: AppSummary }) {
  const hot = summary?.spec?.hot;
  const rollout = summary?.spec?.rollout;
  return (
    <section class="plan" aria-labelledby="plan-title" data-strategy={plan.strategy}>
      <h3 id="plan-title">
        Plan: <strong>{plan.strategy}</strong>
      </h3>
      <p>{plan.reason}</p>
      {plan.changes.length > 0 && (
        <>
          <h4>Changes</h4>
          <ul>
            {plan.changes.map((c) => (
              <li>
                <code>{c.field}</code>: {typeof c.from === 'string' ? short(c.from, 24) : JSON.stringify(c.from)} → {typeof c.to === 'string' ? short(c.to, 24) : JSON.stringify(c.to)}
              </li>
            ))}
          </ul>
        </>
      )}
      {plan.upgrade && (
        <>
          {plan.upgrade.blockers.length > 0 && (
            <>
              <h4>Why not hot</h4>
              <ul>
                {plan.upgrade.blockers.map((b) => (
                  <li>{b}</li>
                ))}
              </ul>
            </>
          )}
          <Steps title="Up (this upgrade)" steps={plan.upgrade.up as Step[]} />
          <Steps title="Down (if it is rolled back)" steps={plan.upgrade.down as Step[]} />
          {plan.upgrade.warnings.length > 0 && (
            <>
              <h4>Warnings</h4>
              <ul class="warnings">
                {plan.upgrade.warnings.map((w) => (
                  <li>{w}</li>
                ))}
              </ul>
            </>
          )}
        </>
      )}
      <h4>What is watched</h4>
      {plan.strategy === 'hot' ? (
        <p>
          Workers swap one at a time. The first is the canary: its 5xx answers are watched for {hot?.canaryWindowMs ?? 0} ms before the others follow; any 5xx or a crash downgrades every upgraded worker in place. The revision becomes permanent after {Math.round((hot?.permanentAfterMs ?? 0) / 1000)} s of probation.
        </p>
      ) : (
        <p>
          New workers start (up to {rollout?.maxSurge ?? 1} beside the old ones, at most {rollout?.maxUnavailable ?? 0} unavailable) and must pass readiness; old ones drain for up to {rollout?.drainTimeoutMs ?? 0} ms. A worker that fails readiness or crashes aborts the update and the old revision keeps serving.
        </p>
      )}
    </section>
  );
}

/**
 * DeployEx's flow: upload a release file or pick an uploaded release, let the server validate it
 * and plan it against what runs (a dry run), then apply it and watch each worker until it ends.
 */
export function UpgradeFlow({ namespace, app, summary }: { namespace: string; app: string; summary?: AppSummary }) {
  const releases = useLive(async () => (await api<{ releases: ReleaseRow[] }>('GET', `/namespaces/${enc(namespace)}/releases?app=${enc(app)}`)).releases, [namespace, app]);
  const [file, setFile] = useState<File>();
  const [picked, setPicked] = useState('');
  const [strategy, setStrategy] = useState<'auto' | 'hot' | 'rolling'>('auto');
  const [plan, setPlan] = useState<{ releaseId: string; result: UpdateResult }>();
  const [rollout, setRollout] = useState<string>();
  const [busy, setBusy] = useState('');
  const [error, setError] = useState<string>();
  const validate = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    setPlan(undefined);
    setRollout(undefined);
    try {
      let releaseId = picked;
      if (file) {
        setBusy('Uploading and validating the release file…');
        const up = await uploadRelease<{ release: ReleaseRow }>(namespace, file);
        if (up.release.app !== app) throw new Error(`this release file is of app ${up.release.app}, not ${app}`);
        releaseId = up.release.id;
        releases.reload();
      }
      if (!releaseId) throw new Error('choose a release file, or pick an uploaded release');
      setBusy('Planning against what runs…');
      const result = await api<UpdateResult>('POST', `${appPath(namespace, app)}/update`, { releaseId, dryRun: true, strategy });
      setPlan({ releaseId, result });
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy('');
    }
  };
  const apply = async () => {
    if (!plan) return;
    setError(undefined);
    setBusy('Starting the update…');
    try {
      const r = await api<UpdateResult>('POST', `${appPath(namespace, app)}/update`, { releaseId: plan.releaseId, strategy });
      if (r.rollout) setRollout(r.rollout.id);
      else setError(r.reason);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy('');
    }
  };
  return (
    <section aria-labelledby="upgrade-title">
      <h2 id="upgrade-title">Upgrade {app}</h2>
      <form onSubmit={validate} class="upgrade">
        <fieldset>
          <legend>Release</legend>
          <label for="release-file">Release file (from <code>molt release build --out FILE</code>)</label>
          <input id="release-file" type="file" accept=".tar,application/x-tar" onChange={(e) => setFile((e.target as HTMLInputElement).files?.[0])} />
          <label for="release-pick">or an uploaded release</label>
          <select id="release-pick" value={picked} onChange={(e) => setPicked((e.target as HTMLSelectElement).value)} disabled={!!file}>
            <option value="">—</option>
            {(releases.data ?? []).map((r) => (
              <option value={r.id}>
                {short(r.id)} · {r.manifest.version} · {when(r.createdAt)} · {bytes(r.size)}
                {r.id === summary?.release ? ' (runs now)' : ''}
              </option>
            ))}
          </select>
          <label for="strategy">Strategy</label>
          <select id="strategy" value={strategy} onChange={(e) => setStrategy((e.target as HTMLSelectElement).value as typeof strategy)}>
            <option value="auto">auto: hot where the plan allows, else rolling</option>
            <option value="hot">hot only</option>
            <option value="rolling">rolling</option>
          </select>
        </fieldset>
        <button type="submit" disabled={!!busy}>
          Validate and plan
        </button>
      </form>
      {busy && <p role="status">{busy}</p>}
      <Problem error={error} />
      {plan && (
        <>
          <Plan plan={plan.result} summary={summary} />
          {plan.result.strategy === 'none' ? (
            <p>Nothing to apply: {plan.result.reason}.</p>
          ) : (
            !rollout && (
              <button type="button" class="primary" onClick={apply} disabled={!!busy}>
                Apply ({plan.result.strategy})
              </button>
            )
          )}
        </>
      )}
      {rollout && <Progress namespace={namespace} app={app} rolloutId={rollout} />}
    </section>
  );
}
