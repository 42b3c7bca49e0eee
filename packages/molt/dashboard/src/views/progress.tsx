import { useEffect, useState } from 'preact/hooks';
import { appPath, streamNdjson } from '../api.ts';
import { live } from '../live.ts';
import type { EventRow } from '../types.ts';
import { Problem } from './problem.tsx';

/** The steps a worker goes through in a hot upgrade, and in a rolling one. */
export const HOT_STEPS = ['loading', 'suspended', 'migrated', 'swapped', 'canary', 'permanent'] as const;
export const ROLLING_STEPS = ['started', 'ready', 'draining', 'stopped'] as const;

export interface WorkerProgress {
  id: string;
  /** The steps reached, with what was said of each (a time, a reason). */
  steps: Record<string, string>;
  failed?: string;
}

export interface RolloutState {
  strategy?: 'hot' | 'rolling';
  workers: WorkerProgress[];
  events: EventRow[];
  outcome?: { ok: boolean; message: string };
  aborting?: string;
}

const SWAP_PHASES = /loaded ([\d.]+) ms, suspended ([\d.]+) ms, migrated ([\d.]+) ms, swapped ([\d.]+) ms/;
const FAILED_PHASE: Record<string, string> = { load: 'loading', suspend: 'suspended', codeChange: 'migrated', apply: 'migrated', configChange: 'migrated' };

/** What a rollout's events say, per worker: a plain fold over the events in order. */
export function foldRollout(events: EventRow[]): RolloutState {
  const state: RolloutState = { workers: [], events };
  const worker = (id: string) => {
    let w = state.workers.find((x) => x.id === id);
    if (!w) state.workers.push((w = { id, steps: {} }));
    return w;
  };
  for (const e of events) {
    const w = e.workerId ? worker(e.workerId) : undefined;
    switch (e.type) {
      case 'rollout.started':
        state.strategy = e.message.startsWith('hot') ? 'hot' : 'rolling';
        break;
      case 'worker.created':
        w!.steps.started = e.ts;
        break;
      case 'worker.running':
        w!.steps.ready = e.ts;
        break;
      case 'worker.draining':
        w!.steps.draining = e.ts;
        break;
      case 'worker.terminated':
        w!.steps.stopped = e.ts;
        break;
      case 'worker.failed':
      case 'worker.crashed':
        w!.failed = e.message;
        break;
      case 'worker.upgrading':
        w!.steps.loading = e.ts;
        break;
      case 'worker.upgraded': {
        const m = SWAP_PHASES.exec(e.message);
        w!.steps.loading = m ? `${m[1]} ms` : e.ts;
        w!.steps.suspended = m ? `${m[2]} ms` : e.ts;
        w!.steps.migrated = m ? `${m[3]} ms` : e.ts;
        w!.steps.swapped = m ? `${m[4]} ms` : e.ts;
        break;
      }
      case 'worker.canary':
        w!.steps.canary = 'watching';
        break;
      case 'worker.canary.passed':
        w!.steps.canary = 'passed';
        break;
      case 'worker.downgraded':
        w!.steps['rolled back'] = e.ts;
        break;
      case 'worker.downgrade.failed':
        w!.failed = e.message;
        break;
      case 'rollout.aborting': {
        state.aborting = e.message;
        // A swap that failed names its phase: the worker it failed on shows where.
        const m = /worker (\S+) could not upgrade: (\w+) failed/.exec(e.message);
        if (m) {
          const failed = worker(m[1]!);
          failed.failed = `${FAILED_PHASE[m[2]!] ?? m[2]} failed`;
        }
        break;
      }
      case 'rollout.succeeded':
        state.outcome = { ok: true, message: e.message };
        break;
      case 'rollout.failed':
        state.outcome = { ok: false, message: e.message };
        break;
    }
  }
  return state;
}

/**
 * A rollout as it happens: its events are read from the API (the stream the CLI follows, which
 * ends after the final event), folded into steps per worker. After a hot upgrade succeeds, the
 * revision's `permanent` step comes from the live stream when its probation ends.
 */
export function Progress({ namespace, app, rolloutId, onDone }: { namespace: string; app: string; rolloutId: string; onDone?: (ok: boolean) => void }) {
  const [events, setEvents] = useState<EventRow[]>([]);
  const [permanent, setPermanent] = useState<string>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    setEvents([]);
    setPermanent(undefined);
    const abort = new AbortController();
    const seen: EventRow[] = [];
    let frame = 0;
    const flush = () => {
      frame = 0;
      setEvents([...seen]);
    };
    streamNdjson<EventRow>(
      `${appPath(namespace, app)}/events?rollout=${encodeURIComponent(rolloutId)}`,
      (e) => {
        seen.push(e);
        if (!frame) frame = requestAnimationFrame(flush);
      },
      abort.signal,
    ).catch((err: Error) => {
      if (!abort.signal.aborted) setError(err.message);
    });
    const off = live.subscribe((batch) => {
      const p = batch.find((e) => e.namespace === namespace && e.app === app && e.type === 'revision.permanent');
      if (p) setPermanent(p.ts);
    });
    return () => {
      abort.abort();
      off();
      cancelAnimationFrame(frame);
    };
  }, [namespace, app, rolloutId]);
  const state = foldRollout(events);
  useEffect(() => {
    if (state.outcome) onDone?.(state.outcome.ok);
  }, [state.outcome?.ok, state.outcome?.message]);
  const steps = state.strategy === 'hot' ? HOT_STEPS : ROLLING_STEPS;
  return (
    <section class="progress" aria-labelledby={`progress-${rolloutId}`} data-rollout={rolloutId}>
      <h2 id={`progress-${rolloutId}`}>
        {state.strategy === 'hot' ? 'Hot upgrade' : state.strategy === 'rolling' ? 'Rolling update' : 'Rollout'} <code>{rolloutId}</code>
      </h2>
      <p role="status" aria-live="polite" class={state.outcome ? (state.outcome.ok ? 'outcome ok' : 'outcome bad') : 'outcome'} data-outcome={state.outcome ? (state.outcome.ok ? 'succeeded' : 'failed') : 'running'}>
        {state.outcome ? `${state.outcome.ok ? 'Succeeded' : 'Failed'}: ${state.outcome.message}` : state.aborting ? `Rolling back: ${state.aborting}` : 'In progress…'}
      </p>
      <Problem error={error} />
      <div class="scroll">
        <table>
          <caption class="sr-only">Steps per worker</caption>
          <thead>
            <tr>
              <th scope="col">Worker</th>
              {steps.map((s) => (
                <th scope="col">{s}</th>
              ))}
              <th scope="col">Problem</th>
            </tr>
          </thead>
          <tbody>
            {state.workers.map((w) => (
              <tr data-worker={w.id}>
                <th scope="row">
                  <code>{w.id}</code>
                </th>
                {steps.map((s) => {
                  const v = s === 'permanent' ? (state.outcome?.ok && permanent ? permanent : undefined) : w.steps[s];
                  return (
                    <td class={v ? 'step done' : 'step'} data-step={s}>
                      {v ? <span aria-label={`${s}: ${v}`}>✓ {/\d ms$/.test(v) ? v : ''}</span> : <span aria-label={`${s}: not yet`}>·</span>}
                    </td>
                  );
                })}
                <td class={w.failed ? 'bad' : ''}>{w.failed ?? (w.steps['rolled back'] ? 'rolled back' : '')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <details>
        <summary>Events of this rollout ({events.length})</summary>
        <ol class="events">
          {events.map((e) => (
            <li class={e.level}>
              <time>{e.ts.slice(11, 19)}</time> {e.message}
            </li>
          ))}
        </ol>
      </details>
    </section>
  );
}
