import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './api.ts';
import { live } from './live.ts';
import type { EventRow, NamespaceView, Principal } from './types.ts';

export interface Loaded<T> {
  data?: T;
  error?: string;
  reload: () => void;
}

/**
 * Data that stays current: loaded now, again every `everyMs`, and again (at most once per 500 ms)
 * when an event `relevant` says something changed. A failed reload keeps the last data shown.
 */
export function useLive<T>(load: () => Promise<T>, deps: unknown[], opts: { everyMs?: number; relevant?: (e: EventRow) => boolean } = {}): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: string }>({});
  const tick = useRef(0);
  const [nonce, setNonce] = useState(0);
  const relevant = useRef(opts.relevant);
  relevant.current = opts.relevant;
  useEffect(() => {
    let alive = true;
    const mine = ++tick.current;
    load().then(
      (data) => alive && mine === tick.current && setState({ data }),
      (err: Error) => alive && mine === tick.current && setState((s) => ({ data: s.data, error: err.message })),
    );
    return () => {
      alive = false;
    };
  }, [...deps, nonce]);
  useEffect(() => {
    setState({});
  }, deps);
  useEffect(() => {
    let timer: number | undefined;
    const soon = () => {
      if (timer === undefined) timer = window.setTimeout(() => ((timer = undefined), setNonce((n) => n + 1)), 500);
    };
    const every = opts.everyMs ? window.setInterval(() => setNonce((n) => n + 1), opts.everyMs) : undefined;
    const off = live.subscribe((batch) => {
      if (relevant.current && batch.some(relevant.current)) soon();
    });
    return () => {
      off();
      clearTimeout(timer);
      clearInterval(every);
    };
  }, [...deps, opts.everyMs]);
  return { ...state, reload: () => setNonce((n) => n + 1) };
}

/** The namespaces the signed-in token sees (all for the server admin, its own otherwise). */
export function useNamespaces(me: Principal): Loaded<NamespaceView[]> {
  return useLive(async () => (await api<{ namespaces: NamespaceView[] }>('GET', '/namespaces')).namespaces, [me.tokenId]);
}

/** Events of one app as they arrive, newest last, kept to `max`. */
export function useAppEvents(namespace: string, app: string, initial: EventRow[] | undefined, max = 500): EventRow[] {
  const [events, setEvents] = useState<EventRow[]>([]);
  useEffect(() => setEvents(initial ?? []), [initial]);
  useEffect(
    () =>
      live.subscribe((batch) => {
        const mine = batch.filter((e) => e.namespace === namespace && e.app === app);
        if (mine.length) setEvents((old) => [...old.filter((o) => !mine.some((m) => m.id === o.id)), ...mine].slice(-max));
      }),
    [namespace, app],
  );
  return events;
}
